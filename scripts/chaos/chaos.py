#!/usr/bin/env python3
"""A seeded chaos run of the authorizer, black-box (processes and ports).

    chaos.py run --profile S|C --seed N --seconds T --out DIR [--replica-acks 0|1] [--terminals 12]
    chaos.py replay DIR [--out DIR2]
    chaos.py check DIR
    chaos.py selftest

Exit status: 0 no violation and coverage complete, 1 a violation, 3 vacuous
(coverage missing), 2 the run itself could not be made (setup failure).
See scripts/chaos/README.md.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # nor from the spawned terminal and proxy processes
sys.path.insert(0, str(Path(__file__).resolve().parent))

import checker  # noqa: E402
import report  # noqa: E402
import selftest  # noqa: E402
from faults import Injector, make_schedule  # noqa: E402
from ledger import dump_ledger, initial_balances, read_balances, read_journals, read_sqlite  # noqa: E402
from metrics import MetricsBook, Sampler, sample  # noqa: E402
from procs import run_cli  # noqa: E402
from terminals import start_terminals  # noqa: E402
from topology import DEFAULT_BINARY, Topology  # noqa: E402

RUNTIME_FIELDS = ("fired", "end", "settled", "target", "accounts", "failover", "new_master",
                  "journal_owed", "keys_moved", "status")


# --------------------------------------------------------------- helpers

class Log:
    """Timestamped lines to DIR/chaos.log; progress lines to stdout too."""

    def __init__(self, path):
        self.file = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, text, echo=False):
        line = f"{time.strftime('%H:%M:%S')} {text}"
        with self.lock:
            self.file.write(line + "\n")
            if echo:
                print(line, flush=True)


class AnswerTail:
    """Follows answers.jsonl for the progress line."""

    def __init__(self, path, bound_s):
        self.path, self.bound = Path(path), bound_s
        self.offset, self.partial = 0, ""
        self.codes, self.requests, self.late, self.mismatch = Counter(), 0, 0, 0
        self.first = {}

    def poll(self):
        if not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            data = f.read()
            self.offset = f.tell()
        lines = (self.partial + data).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if line.strip():
                self._count(json.loads(line))

    def _count(self, a):
        if a["outcome"] == "refused":
            return
        self.requests += 1
        self.codes[a.get("code") or a["outcome"]] += 1
        if a["outcome"] == "answer" and a["t_recv"] - a["t_send"] > self.bound:
            self.late += 1
        if a["type"] == "authorization" and a["outcome"] == "answer":
            if a["role"] == "repeat":
                self.mismatch += self.first.get(a["id"], a["code"]) != a["code"] \
                    and not (a["code"] == "07" and a.get("reason") in checker.NOT_A_DECISION)
            else:
                self.first.setdefault(a["id"], a["code"])

    def line(self, elapsed, fired):
        codes = " ".join(f"{k}={v}" for k, v in sorted(self.codes.items()))
        load = os.getloadavg()[0]
        return (f"t={elapsed:6.1f}s faults={fired} requests={self.requests} [{codes}] "
                f"violations so far: late={self.late} repeat-mismatch={self.mismatch} (load {load:.1f})")


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_commit():
    return git("rev-parse", "HEAD")


def source_changes():
    """Uncommitted changes to what the binary is built from (the binary may then not be HEAD's)."""
    text = git("status", "--porcelain", "--", "Sources", "Lua", "Package.swift")
    return [line for line in text.splitlines() if line.strip()] if text != "unknown" else []


def write_json(path, value):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True, default=str))
    tmp.replace(path)


class Interrupted(Exception):
    pass


def install_signal_handlers():
    def handler(signum, _frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------- run

class Runner:
    """One run: topology up, terminals and faults, final heal, records, check."""

    def __init__(self, params, out, faults):
        self.params, self.out = params, Path(out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = Log(self.out / "chaos.log")
        self.schedule = dict(params, commit=git_commit(), source_changes=source_changes(), faults=faults)
        self.schedule_lock = threading.Lock()
        self.t0 = None
        self.topo = self.terminals = self.sampler = self.injector = None
        self.book = MetricsBook()
        self.notes, self.initial_redis = [], None

    def clock(self):
        return time.monotonic() - self.t0 if self.t0 else 0.0

    def save_schedule(self):
        """Rewrites schedule.json (fault threads update their entries meanwhile: retried)."""
        with self.schedule_lock:
            for _ in range(5):
                try:
                    write_json(self.out / "schedule.json", self.schedule)
                    return
                except RuntimeError:  # a dict changed size while being written
                    time.sleep(0.01)

    def run(self):
        p = self.params
        self.save_schedule()
        work = Path(tempfile.mkdtemp(prefix="run-", dir=self.out))
        self.topo = Topology(p["profile"], work, p["binary"], p["replica_acks"], self.log)
        self.topo.replica_acks_flag = p.get("replica_acks_chosen")
        try:
            self.log(f"starting profile {p['profile']} in {work}", echo=True)
            self.topo.start()
            self.schedule["build"] = self.topo.build
            if self.schedule["source_changes"]:
                self.notes.append("the work tree had uncommitted changes under Sources/ or Lua/ at the start "
                                  f"({', '.join(self.schedule['source_changes'])[:200]}): the binary may not be HEAD's")
            self.save_schedule()
            self.initial_redis = read_balances(self.topo)
            self.log("topology up: " + json.dumps(self.topo.describe()))
            self._drive()
            healthy = self._final_heal()
            audit = self._drain_and_audit()
            self._record(healthy, audit)
            return check_dir(self.out, p, write=True)
        finally:
            self._teardown()

    def _drive(self):
        p, topo = self.params, self.topo
        self.sampler = Sampler(self.book, topo.serves)
        self.sampler.start()
        self.t0 = time.monotonic() + 1.0
        self.terminals = start_terminals({
            "seed": p["seed"], "t0": self.t0, "t_end": float(p["seconds"]), "grace": p["grace"],
            "terminals": p["terminals"], "client_timeout": p["client_timeout_ms"] / 1000.0,
            "think_ms": p["think_ms"], "hot_share": 0.20, "repeat_share": p.get("repeat_share", 0.05),
            "answers": str(self.out / "answers.jsonl"),
            "serves": [("127.0.0.1", s.port) for s in topo.serves],
            "accounts": [{"id": a["id"], "kind": a["kind"]} for a in topo.accounts]})
        self.injector = Injector(topo, self.schedule["faults"], self.clock, self.book, self.log, self.save_schedule)
        threading.Thread(target=self.injector.run, name="injector", daemon=True).start()
        self._progress()

    def _progress(self):
        p = self.params
        tail = AnswerTail(self.out / "answers.jsonl", (p["sla_ms"] + p["margin_ms"]) / 1000.0)
        deadline, next_line = p["seconds"] + p["grace"] + 15, 5.0
        while self.terminals.is_alive() and self.clock() < deadline:
            time.sleep(0.25)
            if self.clock() >= next_line:
                tail.poll()
                self.log(tail.line(self.clock(), self.injector.fired()), echo=True)
                next_line += 5.0
        if self.terminals.is_alive():
            self.notes.append("terminals did not finish within the grace period; stopped")
            self.terminals.kill()
        tail.poll()
        self.log(tail.line(self.clock(), self.injector.fired()) + " (terminals done)", echo=True)

    def _final_heal(self):
        """Every fault over, every process up, cluster ok, replicas in sync, journals empty."""
        topo = self.topo
        self.injector.halt.set()
        if not self.injector.join(180):
            self.notes.append("some faults were still running at the final heal")
        if self.injector.nft is not None and self.injector.nft.error:
            self.notes.append(f"nftables unavailable, partitions skipped: {self.injector.nft.error}")
        self.log("final heal: everything up, cluster ok, replicas in sync, journals empty", echo=True)
        topo.ensure_up()
        healthy = topo.wait_healthy(90) and topo.wait_healthy(30, strict=True)
        if not healthy:
            self.notes.append("topology not healthy (or replicas not in sync) at the final check")
        if not self._wait_journals(60):
            self.notes.append("reversals still owed after waiting 60 s")
        for serve in topo.serves:
            sample(self.book, serve)
        self.sampler.stop()
        return healthy

    def _wait_journals(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(s.owed() for s in self.topo.serves):
                return True
            time.sleep(0.5)
        return False

    def _drain_and_audit(self):
        topo = self.topo
        self.log("stopping the replayer; replay --drain, then audit", echo=True)
        topo.replayer.stop(15)
        env = topo.cli_env()
        drain = run_cli([topo.binary, "replay", "--drain", "--db", topo.db, "--consumer", "chaos-replayer",
                         "--no-trim", "--redis", topo.url("replayer")], env, timeout=300)
        audit = run_cli([topo.binary, "audit", "--db", topo.db, "--redis", topo.url("operator")], env, timeout=300)
        self.log(f"replay --drain exit {drain[0]}; audit exit {audit[0]}: {audit[1].strip()[-400:]}", echo=True)
        return {"rc": audit[0], "output": audit[1][-4000:], "drain_rc": drain[0], "drain_output": drain[1][-2000:]}

    def _record(self, healthy, audit):
        p, topo = self.params, self.topo
        entries = dump_ledger(topo, self.out / "ledger.jsonl")
        write_json(self.out / "final.json", {
            "profile": p["profile"], "seed": p["seed"], "seconds": p["seconds"], "terminals": p["terminals"],
            "replica_acks": p["replica_acks"], "sla_ms": p["sla_ms"], "margin_ms": p["margin_ms"],
            "initial": initial_balances(topo.accounts), "initial_redis": self.initial_redis,
            "final": read_balances(topo), "sqlite": read_sqlite(topo.db), "audit": audit,
            "metrics": self.book.summary(), "journal_owed_end": read_journals(topo),
            "healthy_end": healthy, "notes": self.notes, "loadavg_end": os.getloadavg(),
            "topology": topo.describe(), "ledger_entries": entries})

    def _teardown(self):
        if self.injector is not None:
            self.injector.halt.set()
        if self.sampler is not None:
            self.sampler.stop()
        if self.terminals is not None and self.terminals.is_alive():
            self.terminals.kill()
            self.terminals.join(5)
        if self.topo is not None:
            left = self.topo.teardown()
            nft = self.injector.nft if self.injector else None
            self.log("teardown: " + (f"{len(left)} leftover processes killed" if left else "no process left")
                     + (f"; nft table {nft.table} removed" if nft is not None and nft.error is None else ""), echo=True)


def run_with(params, out, faults):
    runner = Runner(params, out, faults)
    install_signal_handlers()
    try:
        return runner.run()
    except Interrupted as stop:
        print(f"stopped by {stop}; everything torn down", flush=True)
        return 130
    except Exception as error:  # noqa: BLE001 - setup failures: exit 2
        runner.log(f"run failed: {error!r}", echo=True)
        runner.log(traceback.format_exc())
        return 2


# --------------------------------------------------------------- check

def check_dir(directory, params=None, write=False):
    run = checker.load_run(directory)
    params = params or run["schedule"]
    result = checker.check(run, sla_ms=params.get("sla_ms", 100), margin_ms=params.get("margin_ms", 150),
                           c3_bound_s=params.get("c3_bound_s", 10.0))
    result["notes"] = run["final"].get("notes", [])
    text = report.render(run, result, directory)
    if write:
        (Path(directory) / "report.txt").write_text(text)
    print(text, end="")
    return result["exit"]


# --------------------------------------------------------------- CLI

def base_params(args):
    return {"profile": args.profile, "seed": args.seed, "seconds": args.seconds, "terminals": args.terminals,
            "replica_acks": args.replica_acks if args.replica_acks is not None else (1 if args.profile == "C" else 0),
            "replica_acks_chosen": args.replica_acks,
            "sla_ms": args.sla_ms, "margin_ms": args.sla_margin_ms, "c3_bound_s": args.c3_bound_s,
            "think_ms": args.think_ms, "repeat_share": args.repeat_share, "client_timeout_ms": args.client_timeout_ms,
            "grace": args.grace, "binary": str(args.binary or DEFAULT_BINARY)}


def cmd_run(args):
    out = Path(args.out)
    if (out / "answers.jsonl").exists():
        print(f"{out} already holds a run; choose another --out", file=sys.stderr)
        return 2
    params = base_params(args)
    only = set(args.only.split(",")) if args.only else None
    return run_with(params, out, make_schedule(args.profile, args.seed, args.seconds, only=only))


def cmd_replay(args):
    source = Path(args.dir)
    saved = json.loads((source / "schedule.json").read_text())
    faults = [{k: v for k, v in f.items() if k not in RUNTIME_FIELDS} | {"status": "planned"} for f in saved["faults"]]
    params = {k: v for k, v in saved.items() if k not in ("faults", "commit", "source_changes", "build")}
    if args.binary:
        params["binary"] = args.binary
    out = Path(args.out) if args.out else next(source.with_name(f"{source.name}.replay{i}") for i in range(1, 1000)
                                               if not source.with_name(f"{source.name}.replay{i}").exists())
    print(f"replaying {source} (seed {params['seed']}, {len(faults)} faults) into {out}", flush=True)
    return run_with(params, out, faults)


def cmd_check(args):
    return check_dir(args.dir)


def cmd_selftest(_args):
    return selftest.main()


def parser():
    ap = argparse.ArgumentParser(prog="chaos.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="start the topology, drive terminals, fire faults, heal, check, report")
    p_run.add_argument("--profile", choices=("S", "C"), required=True)
    p_run.add_argument("--seed", type=int, required=True)
    p_run.add_argument("--seconds", type=float, required=True, help="traffic duration")
    p_run.add_argument("--out", required=True)
    p_run.add_argument("--replica-acks", type=int, choices=(0, 1), default=None, help="passed to serve only when given; serve's default is 1 on C (a cluster with replicas), 0 on S")
    p_run.add_argument("--terminals", type=int, default=12)
    p_run.add_argument("--sla-ms", type=int, default=100)
    p_run.add_argument("--sla-margin-ms", type=int, default=150, help="scheduling margin over the SLA for C2")
    p_run.add_argument("--c3-bound-s", type=float, default=10.0)
    p_run.add_argument("--think-ms", type=float, default=10.0, help="mean pause between a terminal's requests")
    p_run.add_argument("--client-timeout-ms", type=int, default=500)
    p_run.add_argument("--repeat-share", type=float, default=0.05, help="share of requests that repeat a decided id")
    p_run.add_argument("--grace", type=float, default=15.0, help="seconds after the run for owed terminal reversals")
    p_run.add_argument("--binary", help="the authorizer executable (default .build/debug/authorizer)")
    p_run.add_argument("--only", help="narrow the fault menu to these kinds (comma-separated), to study one fault; "
                                      "such a run is reported vacuous when it misses coverage")
    p_run.set_defaults(func=cmd_run)
    p_replay = sub.add_parser("replay", help="re-run the schedule saved in DIR")
    p_replay.add_argument("dir")
    p_replay.add_argument("--out")
    p_replay.add_argument("--binary")
    p_replay.set_defaults(func=cmd_replay)
    p_check = sub.add_parser("check", help="re-run the checker on a recorded run")
    p_check.add_argument("dir")
    p_check.set_defaults(func=cmd_check)
    p_selftest = sub.add_parser("selftest", help="the checker against planted anomalies")
    p_selftest.set_defaults(func=cmd_selftest)
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
