"""Simulated point-of-sale terminals (asyncio, in a process of their own).

Each terminal keeps one connection and one request in flight, alternating
between the two serves. It sends authorizations (whole and split, some
bound to fail with 51, a share on three hot accounts), repeats of ids
already decided, reversals of its own approvals and balance inquiries.
When an authorization or a repeat gets no answer (client timeout, connection
lost) it reconnects, retries the same id twice, then reverses it, repeating that
reversal (same id, with back-off) until it is answered 00 or the grace
period after the run ends is over. Every attempt is one line of
answers.jsonl.
"""
import asyncio
import json
import multiprocessing
import random
import signal
import time

# Most decided ids (and approvals) a terminal keeps to repeat or reverse.
POOL_CAP = 2_000

CTX = multiprocessing.get_context("spawn")
RETRYABLE = {"timeout", "account busy", "authorizer storage unavailable", "authorizer shutting down"}
MERCHANTS = [
    ("5411", "MERCADO BOM PRECO"),     # FOOD
    ("5412", "ACOUGUE SAO JOSE"),      # FOOD
    ("5811", "PADARIA DO ZE"),         # MEAL
    ("5812", "RESTAURANTE SABOR"),     # MEAL
    ("4121", "UBER EATS"),             # merchant rule: 5812 -> MEAL
    ("5999", "LOJA DE TUDO"),          # CASH
    ("4121", "TAXI CENTRAL"),          # CASH
]


def cents_text(cents):
    return f"{cents // 100}.{cents % 100:02d}"


class Recorder:
    """Appends one JSON line per attempt; flushed often for the progress line."""

    def __init__(self, path, t0):
        self.file = open(path, "a", buffering=1 << 16)
        self.t0 = t0
        self.last_flush = time.monotonic()

    def write(self, record):
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")
        if time.monotonic() - self.last_flush > 0.5:
            self.file.flush()
            self.last_flush = time.monotonic()

    def close(self):
        self.file.flush()
        self.file.close()


class Terminal:
    def __init__(self, index, config, recorder):
        self.index, self.config, self.recorder = index, config, recorder
        self.rng = random.Random(f"{config['seed']}:terminal:{index}")
        self.home = self.serve = index % 2
        self.connected_at = 0.0
        self.reader = self.writer = None
        self.counter = 0
        self.decided = []      # (line, code) of authorizations decided 00/51
        self.approved = []     # lines of approvals not reversed by this terminal
        accounts = config["accounts"]
        self.hot = [a["id"] for a in accounts if a["kind"] == "hot"]
        self.small = [a["id"] for a in accounts if a["kind"] == "small"]
        self.normal = [a["id"] for a in accounts if a["kind"] == "normal"]

    # ----- clock

    def now(self):
        return time.monotonic() - self.config["t0"]

    # ----- connection

    async def close(self):
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None

    async def connect(self):
        """Connects to the preferred serve, else the other; up to ~3 s."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            host, port = self.config["serves"][self.serve]
            try:
                self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
                self.connected_at = self.now()
                return True
            except (OSError, asyncio.TimeoutError):
                self.serve = 1 - self.serve
                await asyncio.sleep(0.05)
        return False

    async def exchange(self, request, role, attempt, extra):
        """Sends one line, waits for its answer; records the attempt."""
        record = {"id": request["id"], "type": request.get("type", "authorization"), "role": role,
                  "attempt": attempt, "account": request["account"], "terminal": self.index}
        record.update(extra)
        if self.writer is None and not await self.connect():
            record.update(outcome="refused", serve=None, t_send=self.now(), t_recv=None,
                          wall_send=time.time(), code=None, reason=None)
            self.recorder.write(record)
            return None
        record.update(serve=self.serve, t_send=self.now(), wall_send=time.time())
        answer, outcome = None, "answer"
        try:
            self.writer.write((json.dumps(request) + "\n").encode())
            line = await asyncio.wait_for(self.reader.readline(), self.config["client_timeout"])
            if not line:
                outcome = "closed"
            else:
                answer = json.loads(line)
        except asyncio.TimeoutError:
            outcome = "timeout"
        except (OSError, ValueError):
            outcome = "closed"
        record.update(t_recv=self.now(), wall_recv=time.time(), outcome=outcome,
                      code=answer.get("code") if answer else None, reason=answer.get("reason") if answer else None)
        if answer is not None and answer.get("id") != request["id"]:
            record["outcome"], record["answer_id"] = "mismatched", answer.get("id")
        self.recorder.write(record)
        if outcome != "answer":
            await self.close()
            self.serve = 1 - self.serve  # a real terminal would try the other host
        return answer if record["outcome"] == "answer" else None

    # ----- requests

    def next_id(self):
        self.counter += 1
        return f"s{self.config['seed']}t{self.index}n{self.counter}"

    def authorization(self):
        roll = self.rng.random()
        if roll < self.config["hot_share"]:
            account = self.rng.choice(self.hot)
        elif roll < self.config["hot_share"] + 0.10:
            account = self.rng.choice(self.small)
        else:
            account = self.rng.choice(self.normal)
        mcc, merchant = self.rng.choice(MERCHANTS)
        cents = self.rng.randrange(100, 8000)
        if self.rng.random() < 0.03:
            cents = 9_999_999_900  # more than any balance (with its split fallback): 51
        return {"id": self.next_id(), "account": account, "totalAmount": cents_text(cents),
                "mcc": mcc, "merchant": merchant}

    def _remember(self, pool, item):
        """Bounded pools (repeats and reversals pick recent ids): a pool that grew
        with the run would make the collector's full passes stall the terminals
        for hundreds of ms in a long run, which the checker would count as late answers."""
        if len(pool) < POOL_CAP:
            pool.append(item)
        else:
            pool[self.rng.randrange(POOL_CAP)] = item

    async def authorize(self, request):
        extra = {"amount": request["totalAmount"], "mcc": request["mcc"]}
        for attempt in range(3):
            answer = await self.exchange(request, "first" if attempt == 0 else "retry", attempt, extra)
            if answer is not None:
                code = answer.get("code")
                if code in ("00", "51"):
                    self._remember(self.decided, (request, code))
                if code == "00":
                    self._remember(self.approved, request)
                return
            await asyncio.sleep(0.05 * (attempt + 1))
        await self.reverse(request, f"{request['id']}-rv", "no_answer")

    async def reverse(self, original, reversal_id, purpose):
        """Repeats one reversal until it is answered 00 (or the grace ends)."""
        request = {"type": "reversal", "id": reversal_id, "account": original["account"], "original": original["id"]}
        if purpose == "terminal" and self.rng.random() < 0.5:
            request.update(totalAmount=original["totalAmount"], mcc=original["mcc"], merchant=original["merchant"])
        deadline = self.config["t_end"] + self.config["grace"]
        backoff, attempt = 0.05, 0
        while self.now() < deadline:
            answer = await self.exchange(request, "first" if attempt == 0 else "retry", attempt,
                                         {"original": original["id"], "purpose": purpose})
            attempt += 1
            if answer is not None:
                if answer.get("code") == "00":
                    return True
                if answer.get("reason") not in RETRYABLE:
                    return False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
        return False

    async def repeat(self):
        """Sends a decided id again. A repeat is an attempt like any other: with
        no answer the terminal cannot know what the service last decided (a
        repeat answered 07 timeout is reversed by the service), so, as after
        any unanswered attempt, it retries the id, then reverses it."""
        request, _ = self.rng.choice(self.decided)
        extra = {"amount": request["totalAmount"], "mcc": request["mcc"]}
        for attempt in range(3):
            if await self.exchange(request, "repeat", attempt, extra) is not None:
                return
            await asyncio.sleep(0.05 * (attempt + 1))
        await self.reverse(request, f"{request['id']}-rv", "no_answer")

    async def terminal_reversal(self):
        request = self.approved.pop(self.rng.randrange(len(self.approved)))
        await self.reverse(request, f"{request['id']}-tr", "terminal")

    async def balance(self):
        account = self.rng.choice(self.hot + self.normal)
        await self.exchange({"type": "balance", "id": self.next_id(), "account": account}, "first", 0, {})

    async def go_home(self):
        """Back to its own serve a while after a failure sent it to the other one."""
        if self.writer is not None and self.serve != self.home and self.now() - self.connected_at > 2.0:
            await self.close()
            self.serve = self.home

    async def run(self):
        think = self.config["think_ms"] / 1000.0
        while self.now() < self.config["t_end"]:
            await self.go_home()
            roll = self.rng.random()
            repeats = self.config["repeat_share"]
            if roll < repeats and self.decided:
                await self.repeat()
            elif roll < repeats + 0.05 and self.approved:
                await self.terminal_reversal()
            elif roll < repeats + 0.10:
                await self.balance()
            else:
                await self.authorize(self.authorization())
            await asyncio.sleep(self.rng.uniform(0, 2 * think))
        await self.close()


async def _run_all(config):
    recorder = Recorder(config["answers"], config["t0"])
    # Start at t0 (the runner's clock zero; CLOCK_MONOTONIC is system-wide).
    await asyncio.sleep(max(0.0, config["t0"] - time.monotonic()))
    terminals = [Terminal(i, config, recorder) for i in range(config["terminals"])]
    try:
        await asyncio.gather(*(t.run() for t in terminals))
    finally:
        recorder.close()


def _main(config):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us
    asyncio.run(_run_all(config))


def start_terminals(config):
    """Runs the terminals in a child process; returns it."""
    process = CTX.Process(target=_main, args=(config,), name="chaos-terminals", daemon=True)
    process.start()
    return process
