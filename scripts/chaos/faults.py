"""The fault menu, the seeded schedule and the fault injector.

A schedule is drawn once from `random.Random(seed)`: each fault has a kind,
a start offset (seconds after the run's clock zero) and its parameters
(durations, which shard, which serve, ...). Targets are resolved when the
fault fires (the master of a shard is whichever node is master then).
Faults run in threads of their own and may overlap; each declares the
resources it disturbs (`shard:K`, `serve:I`, `redis`, `proxy`, `replayer`)
and waits until they are free, so that a shard never has two faults at
once. Each fault is healed (resumed, restarted, rules removed) and waits
until its part of the topology is healthy again before it releases them.
"""
import atexit
import os
import random
import signal
import subprocess
import threading
import time
import traceback

from metrics import sample
from topology import keyslot

# kind: weight. The `MUST` kinds appear at least once in every schedule
# (coverage: failover, 07 timeout, journal on restart, ASK/TRYAGAIN, WAIT shortfall).
MENU = {
    "S": {"redis_pause": 5, "redis_kill": 2, "serve_kill": 2, "serve_kill_owed": 1, "replayer_kill": 1,
          "proxy_delay": 3, "proxy_stall": 2, "proxy_drop_replies": 2, "proxy_reset": 2, "redis_oom": 1},
    "C": {"master_pause": 3, "master_pause_long": 1, "master_kill": 2, "replica_kill": 2, "replicas_stall": 2,
          "serve_kill": 1, "serve_kill_owed": 1, "replayer_kill": 1, "slot_migration": 2,
          "manual_failover": 1, "partition": 1, "master_oom": 1},
}
MUST = {
    "S": ["redis_pause", "serve_kill_owed", "replayer_kill", "proxy_drop_replies", "redis_oom"],
    "C": ["master_pause_long", "serve_kill_owed", "replayer_kill", "slot_migration", "replicas_stall", "partition"],
}
SETTLE_TIMEOUT = 45.0
RESOURCE_WAIT = 20.0


# --------------------------------------------------------------- schedule

def _params(rng, kind):
    u = rng.uniform
    table = {
        "redis_pause": lambda: {"hold": u(0.04, 0.25)},
        "master_pause": lambda: {"hold": u(0.04, 0.25)},
        "master_pause_long": lambda: {"hold": u(2.5, 3.5)},
        "redis_kill": lambda: {"down": u(0.3, 2.0)},
        "master_kill": lambda: {"down": u(1.0, 4.0)},
        "replica_kill": lambda: {"down": u(0.5, 3.0), "which": rng.randrange(2)},
        "replicas_stall": lambda: {"hold": u(0.2, 0.8)},
        "serve_kill": lambda: {"down": u(0.5, 2.0)},
        "serve_kill_owed": lambda: {"pause": u(0.5, 0.9), "down": u(0.3, 1.0)},
        "replayer_kill": lambda: {"down": u(0.5, 3.0)},
        "proxy_delay": lambda: {"delay_ms": u(20, 150), "hold": u(1.0, 4.0)},
        "proxy_stall": lambda: {"hold": u(0.3, 1.0)},
        "proxy_drop_replies": lambda: {"hold": u(0.2, 1.0)},
        "proxy_reset": lambda: {},
        "slot_migration": lambda: {"hot": rng.randrange(3), "to": rng.randrange(2), "step_ms": u(50, 200)},
        "manual_failover": lambda: {"which": rng.randrange(2)},
        "partition": lambda: {"hold": u(3.0, 6.0)},
        "redis_oom": lambda: {"hold": u(0.3, 1.5)},
        "master_oom": lambda: {"hold": u(0.3, 1.5)},
    }
    params = table[kind]()
    params["shard"] = rng.randrange(3)
    params["serve"] = rng.randrange(2)
    return params


def make_schedule(profile, seed, seconds, spacing=4.0, only=None):
    """The faults of a run, drawn from `random.Random(seed)`; `only` narrows the menu to some kinds."""
    rng = random.Random(seed)
    menu = {k: w for k, w in MENU[profile].items() if not only or k in only}
    must = [k for k in MUST[profile] if k in menu]
    if not menu:
        raise ValueError(f"no fault kind of profile {profile} in {sorted(only)}")
    count = max(len(must) + 2, int(seconds / spacing))
    kinds = list(must)
    names, weights = list(menu), list(menu.values())
    kinds += rng.choices(names, weights, k=count - len(kinds))
    rng.shuffle(kinds)
    first, last = 3.0, max(4.0, seconds - 12.0)
    starts = sorted(rng.uniform(first, last) for _ in kinds)
    return [{"n": i, "kind": kind, "start": round(start, 3), "params": _params(rng, kind), "status": "planned"}
            for i, (kind, start) in enumerate(zip(kinds, starts))]


# Faults that need (or change) the masters' majority: a failover needs the
# votes of most masters, so two of these at once would block each other.
QUORUM = ("master_pause_long", "master_kill", "partition", "manual_failover", "slot_migration")


def resources(profile, fault):
    wanted = _resources(profile, fault)
    if fault["kind"] in QUORUM:
        wanted.add("quorum")
    return wanted


def _resources(profile, fault):
    kind, p = fault["kind"], fault["params"]
    if kind == "serve_kill":
        return {f"serve:{p['serve']}"}
    if kind == "serve_kill_owed":
        return {f"serve:{p['serve']}", "redis" if profile == "S" else f"shard:{p['shard']}"}
    if kind == "replayer_kill":
        return {"replayer"}
    if kind.startswith("proxy_"):
        return {"proxy"}
    if kind.startswith("redis_"):
        return {"redis"}
    if kind == "slot_migration":
        return {"shard:*"}  # two shards move; keep the others quiet too
    return {f"shard:{p['shard']}"}


# --------------------------------------------------------------- resources

class Resources:
    """Named locks that faults hold while they disturb something."""

    def __init__(self):
        self.cond = threading.Condition()
        self.busy = set()

    def _free(self, wanted):
        if "shard:*" in wanted and any(b.startswith("shard:") for b in self.busy):
            return False
        if "shard:*" in self.busy and any(w.startswith("shard:") for w in wanted):
            return False
        return not (wanted & self.busy)

    def acquire(self, wanted, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: self._free(wanted), timeout):
                return False
            self.busy |= wanted
            return True

    def release(self, wanted):
        with self.cond:
            self.busy -= wanted
            self.cond.notify_all()


# --------------------------------------------------------------- nftables

class Nft:
    """A table of our own for partitions; removed at teardown."""

    def __init__(self):
        self.table = f"chaos_{os.getpid()}"
        self.ready = False
        self.error = None

    def _nft(self, *args):
        return subprocess.run(["nft", *args], capture_output=True, text=True, timeout=10)

    def setup(self):
        for args in (("add", "table", "inet", self.table),
                     ("add", "chain", "inet", self.table, "input",
                      "{ type filter hook input priority 0 ; policy accept ; }")):
            try:
                result = self._nft(*args)
            except (OSError, subprocess.SubprocessError) as error:
                self.error = str(error)
                return False
            if result.returncode != 0:
                self.error = result.stderr.strip()
                return False
        self.ready = True
        atexit.register(self.remove)
        return True

    def partition(self, host, others):
        peers = "{ " + ", ".join(others) + " }"
        for rule in (f"ip saddr {host} ip daddr {peers} drop", f"ip saddr {peers} ip daddr {host} drop"):
            result = self._nft("add", "rule", "inet", self.table, "input", *rule.split())
            if result.returncode != 0:
                raise RuntimeError(f"nft: {result.stderr.strip()}")

    def heal(self):
        self._nft("flush", "chain", "inet", self.table, "input")

    def remove(self):
        if self.ready:
            self._nft("delete", "table", "inet", self.table)
            self.ready = False


# --------------------------------------------------------------- injector

class Injector:
    """Fires the schedule's faults at their offsets, each in a thread."""

    def __init__(self, topo, schedule, clock, book, log, save):
        self.topo, self.schedule, self.clock, self.book = topo, schedule, clock, book
        self.log, self.save = log, save
        self.resources = Resources()
        self.threads = []
        self.halt = threading.Event()
        self.nft = None
        if topo.profile == "C":
            self.nft = Nft()
            if self.nft.setup():
                topo.nft = self.nft
            else:
                self.log(f"nftables unavailable ({self.nft.error}); partitions are skipped")

    # ----- driving

    def run(self):
        """Blocks until every fault has fired (or the run is stopped)."""
        for fault in self.schedule:
            while not self.halt.is_set() and self.clock() < fault["start"]:
                self.halt.wait(min(0.1, fault["start"] - self.clock()))
            if self.halt.is_set():
                fault["status"] = "not fired"
                continue
            thread = threading.Thread(target=self._fire, args=(fault,), name=f"fault-{fault['n']}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def fired(self):
        return sum(1 for f in self.schedule if f.get("fired") is not None)

    def _fire(self, fault):
        wanted = resources(self.topo.profile, fault)
        if not self.resources.acquire(wanted, RESOURCE_WAIT):
            fault["status"] = "skipped: resources busy"
            self.save()
            return
        try:
            getattr(self, "_" + fault["kind"])(fault, fault["params"])
            if fault.get("status", "planned") == "planned":
                fault["status"] = "done"
        except Exception as error:  # noqa: BLE001 - recorded, the run goes on
            fault["status"] = f"error: {error}"
            self.log(f"fault {fault['n']} {fault['kind']} failed: {error}\n{traceback.format_exc()}")
        finally:
            if fault.get("fired") is not None:
                fault.setdefault("end", round(self.clock(), 3))
            self.resources.release(wanted)
            self.save()

    def _begin(self, fault, target, accounts=()):
        fault.update(fired=round(self.clock(), 3), target=target, accounts=list(accounts))
        self.log(f"fault {fault['n']} {fault['kind']} on {target}")
        self.save()

    def _end(self, fault):
        fault["end"] = round(self.clock(), 3)
        fault.setdefault("settled", fault["end"])
        self.save()

    def _settle(self, fault, shard=None):
        ok = (self.topo.wait_healthy(SETTLE_TIMEOUT) if shard is None else
              _wait(lambda: self.topo.shard_healthy(shard), SETTLE_TIMEOUT))
        fault["settled"] = round(self.clock(), 3)
        if not ok:
            fault["status"] = "done; not healthy after heal"
        self.save()

    def _master(self, shard):
        node = _wait(lambda: self.topo.master_of_shard(shard), 10.0)
        if node is None:
            raise RuntimeError(f"shard {shard} has no master")
        return node

    # ----- profile S: the single Redis

    def _redis_pause(self, fault, p):
        node = self.topo.nodes[0]
        self._begin(fault, node.addr, self.topo.accounts_of_shard(0))
        node.proc.send(signal.SIGSTOP)
        time.sleep(p["hold"])
        node.proc.send(signal.SIGCONT)
        self._end(fault)
        self._settle(fault)

    def _redis_kill(self, fault, p):
        node = self.topo.nodes[0]
        self._begin(fault, node.addr, self.topo.accounts_of_shard(0))
        node.proc.kill()
        time.sleep(p["down"])
        node.proc.start()
        node.wait_ready(30)
        self._end(fault)
        self._settle(fault)

    def _redis_oom(self, fault, p):
        self._at_maxmemory(fault, p, self.topo.nodes[0], 0)

    def _master_oom(self, fault, p):
        self._at_maxmemory(fault, p, self._master(p["shard"]), p["shard"])

    def _at_maxmemory(self, fault, p, node, shard):
        """Redis at maxmemory: every write refused (OOM) for a while, then the limit back."""
        before = node.client().config_get("maxmemory").get("maxmemory", "0")
        self._begin(fault, node.addr, self.topo.accounts_of_shard(shard))
        node.client().config_set("maxmemory", "1")
        time.sleep(p["hold"])
        node.client().config_set("maxmemory", before)
        self._end(fault)
        self._settle(fault, None if self.topo.profile == "S" else shard)

    # ----- proxy (S)

    def _proxy_delay(self, fault, p):
        self._begin(fault, f"proxy +{p['delay_ms']:.0f} ms", self.topo.accounts_of_shard(0))
        self.topo.proxy_control.delay(p["delay_ms"])
        time.sleep(p["hold"])
        self.topo.proxy_control.delay(0)
        self._end(fault)

    def _proxy_stall(self, fault, p):
        self._begin(fault, f"proxy stall {p['hold']:.2f} s", self.topo.accounts_of_shard(0))
        self.topo.proxy_control.stall(p["hold"])
        time.sleep(p["hold"])
        self._end(fault)

    def _proxy_drop_replies(self, fault, p):
        self._begin(fault, f"proxy drops replies {p['hold']:.2f} s", self.topo.accounts_of_shard(0))
        self.topo.proxy_control.drop_replies(p["hold"])
        time.sleep(p["hold"])
        self.topo.proxy_control.reset()
        self._end(fault)

    def _proxy_reset(self, fault, p):
        self._begin(fault, "proxy resets every connection", self.topo.accounts_of_shard(0))
        self.topo.proxy_control.reset()
        time.sleep(0.05)
        self._end(fault)

    # ----- serves and replayer

    def _kill_serve(self, fault, serve):
        sample(self.book, serve)  # the life's last counters
        serve.proc.kill()
        owed = serve.owed()
        fault["journal_owed"] = len(owed)
        self.log(f"serve-{serve.index} killed with {len(owed)} reversals owed in its journal")

    def _restart_serve(self, fault, serve):
        if not self.topo.start_serve(serve, timeout=SETTLE_TIMEOUT):
            fault["status"] = "done; serve did not restart"

    def _serve_kill(self, fault, p):
        serve = self.topo.serves[p["serve"]]
        self._begin(fault, f"serve-{serve.index}")
        self._kill_serve(fault, serve)
        time.sleep(p["down"])
        self._restart_serve(fault, serve)
        self._end(fault)
        fault["settled"] = fault["end"]

    def _serve_kill_owed(self, fault, p):
        """Redis (S) or one master (C) paused; the serve killed while it owes reversals."""
        serve = self.topo.serves[p["serve"]]
        if self.topo.profile == "S":
            node, shard = self.topo.nodes[0], None
        else:
            shard = p["shard"]
            node = self._master(shard)
        self._begin(fault, f"serve-{serve.index} during a pause of {node.addr}", self.topo.accounts_of_shard(shard or 0))
        node.proc.send(signal.SIGSTOP)
        try:
            time.sleep(p["pause"])
            self._kill_serve(fault, serve)
        finally:
            node.proc.send(signal.SIGCONT)
        time.sleep(p["down"])
        self._restart_serve(fault, serve)
        self._end(fault)
        self._settle(fault, shard)

    def _replayer_kill(self, fault, p):
        self._begin(fault, "replayer")
        self.topo.replayer.kill()
        time.sleep(p["down"])
        self.topo.replayer.start()
        self._end(fault)
        fault["settled"] = fault["end"]

    # ----- profile C: nodes of a shard

    def _master_pause(self, fault, p, until_failover=False):
        shard = p["shard"]
        node = self._master(shard)
        self._begin(fault, f"master {node.addr} (shard {shard})", self.topo.accounts_of_shard(shard))
        node.proc.send(signal.SIGSTOP)
        try:
            time.sleep(p["hold"])
            if until_failover:  # past the node timeout: held until a replica is promoted (at most 6 s more)
                _wait(lambda: any(r.info("replication").get("role") == "master"
                                  for r in self.topo.nodes if r.index in self.topo.shards[shard] and r is not node), 6.0)
        finally:
            node.proc.send(signal.SIGCONT)
        self._end(fault)
        self._settle(fault, shard)
        self._note_failover(fault, shard, node)

    def _master_pause_long(self, fault, p):
        self._master_pause(fault, p, until_failover=True)

    def _note_failover(self, fault, shard, old_master):
        new = self.topo.master_of_shard(shard)
        fault["failover"] = new is not None and new.index != old_master.index
        if fault["failover"]:
            fault["new_master"] = new.addr
            self.save()

    def _kill_node(self, fault, p, node, target, shard):
        """SIGKILL of a cluster node, restarted after `down` on the same dir (AOF)."""
        self._begin(fault, target, self.topo.accounts_of_shard(shard))
        node.proc.kill()
        time.sleep(p["down"])
        node.proc.start()
        node.wait_ready(30)
        self._end(fault)
        self._settle(fault, shard)

    def _master_kill(self, fault, p):
        shard = p["shard"]
        node = self._master(shard)
        self._kill_node(fault, p, node, f"master {node.addr} (shard {shard})", shard)
        self._note_failover(fault, shard, node)

    def _replica_kill(self, fault, p):
        shard = p["shard"]
        node = self.topo.replicas_of_shard(shard)[p["which"] % 2]
        self._kill_node(fault, p, node, f"replica {node.addr} (shard {shard})", shard)

    def _replicas_stall(self, fault, p):
        shard = p["shard"]
        replicas = self.topo.replicas_of_shard(shard)
        self._begin(fault, "replicas " + ", ".join(r.addr for r in replicas) + f" (shard {shard})",
                    self.topo.accounts_of_shard(shard))
        for node in replicas:
            node.proc.send(signal.SIGSTOP)
        time.sleep(p["hold"])
        for node in replicas:
            node.proc.send(signal.SIGCONT)
        self._end(fault)
        self._settle(fault, shard)

    def _manual_failover(self, fault, p):
        shard = p["shard"]
        old = self._master(shard)
        replica = self.topo.replicas_of_shard(shard)[p["which"] % 2]
        self._begin(fault, f"CLUSTER FAILOVER on {replica.addr} (shard {shard})", self.topo.accounts_of_shard(shard))
        replica.client().execute_command("CLUSTER", "FAILOVER")
        _wait(lambda: replica.info("replication").get("role") == "master", 15.0)
        self._end(fault)
        self._settle(fault, shard)
        self._note_failover(fault, shard, old)

    def _partition(self, fault, p):
        shard = p["shard"]
        if self.nft is None or not self.nft.ready:
            fault["status"] = "skipped: nftables unavailable"
            return
        node = self._master(shard)
        others = [n.host for n in self.topo.nodes if n is not node]
        self._begin(fault, f"partition of master {node.addr} (shard {shard}) from the other nodes",
                    self.topo.accounts_of_shard(shard))
        self.nft.partition(node.host, others)
        try:
            time.sleep(p["hold"])
        finally:
            self.nft.heal()
        self._end(fault)
        self._settle(fault, shard)
        self._note_failover(fault, shard, node)

    def _slot_migration(self, fault, p):
        account = f"hot{p['hot']}"
        slot = keyslot(account)
        source = self.topo.slot_owner(slot)
        src_shard = self.topo.shard_of_node(source)
        others = [k for k in range(len(self.topo.shards)) if k != src_shard]
        dst_shard = others[p["to"] % len(others)]
        target = self._master(dst_shard)
        self._begin(fault, f"slot {slot} ({account}) {source.addr} -> {target.addr}",
                    self.topo.accounts_of_shard(src_shard))
        fault["accounts"] = [account]
        moved = migrate_slot(self.topo, slot, source, target, p["step_ms"] / 1000.0)
        fault["keys_moved"] = moved
        self._end(fault)
        self._settle(fault, src_shard)
        self._settle(fault, dst_shard)


def migrate_slot(topo, slot, source, target, step):
    """Live migration of one slot, one key per MIGRATE, `step` s apart."""
    admin = topo.creds["REDIS_ADMIN_PASSWORD"]
    src_id, dst_id = topo.node_id(source), topo.node_id(target)
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    moved = 0
    time.sleep(step)
    while True:
        keys = source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)
        if not keys:
            break
        source.client().execute_command("MIGRATE", target.host, target.port, "", 0, 5000,
                                        "AUTH2", "default", admin, "KEYS", *keys)
        moved += len(keys)
        time.sleep(step)
    for node in [target, source] + [m for m in topo.masters() if m not in (target, source)]:
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return moved


def _wait(predicate, timeout, period=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(period)
