"""The topology of a chaos run: Redis (one node, or a 3x3 cluster on
distinct loopback addresses), two `authorizer serve`, one `authorizer
replay`, in profile S the fault proxy between serve and Redis, and the
accounts the terminals use. Processes are `procs.Proc`s.
"""
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from procs import Proc, free_port, http_get, kill_everything, leftovers, port_free, run_cli, wait_tcp
from proxy import start_proxy

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = ROOT / ".build" / "debug" / "authorizer"
NODE_TIMEOUT_MS = 2000


def import_redis():
    """redis-py: from the interpreter's path, else Debian's python3-redis."""
    try:
        import redis  # noqa: F401
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        import redis  # noqa: F401
    return sys.modules["redis"]


# --------------------------------------------------------------- cluster math

def _crc16_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def keyslot(key):
    """Redis Cluster hash slot of a key (hash tags honoured)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    crc = 0
    for byte in key.encode():
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc % 16384


def parse_cluster_nodes(text):
    nodes = []
    for line in text.strip().splitlines():
        parts = line.split()
        addr = parts[1].split("@")[0]
        slots = []
        for item in parts[8:]:
            if item.startswith("["):
                continue
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        nodes.append({"id": parts[0], "addr": addr, "flags": set(parts[2].split(",")),
                      "master": parts[3], "slots": slots})
    return nodes


def _roles(view):
    return {(n["id"], n["master"]) for n in view}


# --------------------------------------------------------------- Redis

class RedisNode:
    """One redis-server with the project's redis.conf and ACL users."""

    def __init__(self, index, host, port, workdir, creds, cluster):
        self.index, self.host, self.port, self.creds = index, host, port, creds
        self.dir = Path(workdir) / f"redis-{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", ROOT / "redis.conf", "--port", port, "--dir", self.dir,
                "--aclfile", Path(workdir) / "users.acl", "--logfile", self.dir / "redis.log",
                "--daemonize", "no", "--bind", host]
        if cluster:
            argv += ["--bind-source-addr", host, "--cluster-announce-ip", host, "--protected-mode", "no",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", NODE_TIMEOUT_MS, "--cluster-require-full-coverage", "no",
                     # The fault menu acts on fixed shards (a master and its two replicas): a
                     # replica that migrates to an orphaned master would leave a shard with
                     # none the harness can find, and the faults after it skipped.
                     "--cluster-allow-replica-migration", "no",
                     "--masteruser", "replication", "--masterauth", creds["REPLICATION_PASSWORD"]]
        self.proc = Proc(f"redis-{index}", argv, self.dir / "stdout.log", cwd=self.dir)
        self._client = None

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def client(self):
        if self._client is None:
            redis = import_redis()
            self._client = redis.Redis(host=self.host, port=self.port, username="default",
                                       password=self.creds["REDIS_ADMIN_PASSWORD"], decode_responses=True,
                                       socket_timeout=2.0, socket_connect_timeout=1.0)
        return self._client

    def call(self, *args):
        """The reply, or None when the node does not answer (down, paused, error)."""
        if not self.proc.alive():
            return None
        try:
            return self.client().execute_command(*args)
        except Exception:  # noqa: BLE001 - any failure means "not now"
            return None

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call("PING"):
                return True
            time.sleep(0.05)
        return False

    def info(self, section):
        return self.call("INFO", section) or {}

    def cluster_state(self):
        text = self.call("CLUSTER", "INFO") or ""
        for line in text.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return None


def read_env_file(path):
    values = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


# --------------------------------------------------------------- authorizer

class Serve:
    """`authorizer serve` with a state dir of its own, restartable."""

    def __init__(self, index, binary, workdir, redis_url, replica_acks, taken, env):
        self.index = index
        self.port = free_port(taken=taken)
        self.metrics_port = free_port(taken=taken + [self.port])
        self.state_dir = Path(workdir) / f"serve-{index}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "serve", "--host", "127.0.0.1", "--port", self.port,
                "--metrics-port", self.metrics_port, "--state-dir", self.state_dir, "--redis", redis_url]
        if replica_acks is not None:  # None: serve's own default (1 on a cluster with replicas)
            argv += ["--replica-acks", replica_acks]
        self.proc = Proc(f"serve-{index}", argv, self.state_dir / "serve.log", env=env)

    @property
    def journal(self):
        return self.state_dir / "pending-reversals.log"

    def metrics_text(self):
        try:
            return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        except OSError:
            return None

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                return False
            if wait_tcp("127.0.0.1", self.port, 0.3) and self.metrics_text() is not None:
                return True
            time.sleep(0.1)
        return False

    def owed(self):
        return journal_owed(self.journal)


def journal_owed(path):
    """The reversals still owed in a journal file: `A account original µs`
    lines not settled by a `D` line of the same or a later 07 (µs: when the
    07 was answered; older serves wrote a token there, or nothing: read as 0)."""
    owed = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (3, 4) or parts[0] not in ("A", "D"):
            continue
        key = (parts[1], parts[2])
        since = int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else 0
        if parts[0] == "A":
            owed[key] = max(owed.get(key, since), since)
        elif key in owed and owed[key] <= since:
            del owed[key]
    return set(owed)


# --------------------------------------------------------------- accounts

def make_accounts():
    """40 accounts: 3 hot, 5 small (51s and splits), 32 ordinary."""
    accounts = []
    for i in range(3):
        accounts.append({"id": f"hot{i}", "kind": "hot", "set": {"FOOD": "10000000.00", "MEAL": "10000000.00", "CASH": "10000000.00"}})
    for i in range(5):
        accounts.append({"id": f"small{i}", "kind": "small", "set": {"FOOD": "30.00", "MEAL": "20.00", "CASH": "25.00"}})
    for i in range(32):
        accounts.append({"id": f"acct{i:02d}", "kind": "normal",
                         "set": {"FOOD": "5000000.00", "MEAL": "5000000.00", "CASH": "5000000.00"}})
    return accounts


RULES_YAML = """# chaos run: the default rules, split fallback (FOOD/MEAL pay what they have, CASH the rest)
mcc:
  "5411": FOOD
  "5412": FOOD
  "5811": MEAL
  "5812": MEAL
merchants:
  "UBER EATS": "5812"
  "UBER TRIP": "4121"
fallback: CASH
fallback_mode: split
"""


# --------------------------------------------------------------- topology

class Topology:
    """Everything a run needs, for profile S or C."""

    def __init__(self, profile, workdir, binary, replica_acks, log):
        self.profile, self.workdir, self.binary = profile, Path(workdir), Path(binary)
        self.replica_acks, self.log = replica_acks, log
        # Passed to serve only when chosen: otherwise serve's default applies.
        self.replica_acks_flag = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes, self.serves, self.shards = [], [], []
        self.proxy = self.proxy_control = self.proxy_port = self.replayer = None
        self.creds, self.accounts, self.nft = {}, [], None
        self.env = dict(os.environ)  # for every authorizer process (AUTHORIZER_LUA_DIR added)
        self.db = self.workdir / "statements.sqlite"
        self.build = {}

    # ----- start

    def start(self):
        self._snapshot_binary()
        rc, out = run_cli(["bash", ROOT / "scripts" / "redis-users.sh", self.workdir, "0"], dict(os.environ))
        if rc != 0:
            raise RuntimeError(f"redis-users.sh failed: {out}")
        self.creds = read_env_file(self.workdir / "credentials.env")
        if self.profile == "S":
            self._start_single()
        else:
            self._start_cluster()
        self._setup_accounts()
        for serve in self.serves:
            self.start_serve(serve)
        self.replayer = Proc("replayer", [self.binary, "replay", "--db", self.db, "--consumer", "chaos-replayer",
                                          "--no-trim", "--redis", self.url("replayer")],
                             self.workdir / "replayer.log", env=self.env)
        self.replayer.start()

    def _snapshot_binary(self):
        """The run keeps its own copy of the executable and the Lua scripts,
        so that a rebuild meanwhile does not change a restarted process."""
        if not self.binary.exists():
            raise RuntimeError(f"{self.binary} is missing (build it with `swift build`)")
        copy = self.workdir / "bin" / "authorizer"
        copy.parent.mkdir(exist_ok=True)
        for _ in range(10):  # a build may be writing it right now: copy until the copy runs
            shutil.copy2(self.binary, copy)
            try:
                if run_cli([copy, "--help"], self.env, timeout=30)[0] == 0:
                    break
            except OSError:
                pass
            time.sleep(5)
        else:
            raise RuntimeError(f"{self.binary} does not run (a build in progress?)")
        shutil.copytree(ROOT / "Lua", self.workdir / "lua", dirs_exist_ok=True)
        self.env["AUTHORIZER_LUA_DIR"] = str(self.workdir / "lua")
        built = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.binary.stat().st_mtime))
        self.build = {"binary": str(self.binary), "mtime": built, "sha256": hashlib.sha256(copy.read_bytes()).hexdigest()}
        self.binary = copy

    def _start_single(self):
        port = free_port()
        self.nodes = [RedisNode(0, "127.0.0.1", port, self.workdir, self.creds, cluster=False)]
        self._start_nodes()
        self.proxy_port = free_port(taken=[port])
        self.proxy, self.proxy_control = start_proxy(self.proxy_port, "127.0.0.1", port)
        self._make_serves(self.url("authorizer", via_proxy=True))

    def _start_cluster(self):
        hosts = [f"127.0.0.{n}" for n in range(2, 11)]
        port = self._cluster_port(hosts)
        self.nodes = [RedisNode(i, host, port, self.workdir, self.creds, cluster=True) for i, host in enumerate(hosts)]
        self._start_nodes()
        rc, out = run_cli(["redis-cli", "--user", "default", "--pass", self.creds["REDIS_ADMIN_PASSWORD"],
                           "--no-auth-warning", "--cluster", "create"] + [n.addr for n in self.nodes]
                          + ["--cluster-replicas", "2", "--cluster-yes"], dict(os.environ), timeout=60)
        if rc != 0:
            raise RuntimeError(f"cluster create failed: {out[-2000:]}")
        deadline = time.monotonic() + 60
        while not self._read_shards():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not settle into 3 masters with 2 replicas each: {self.shards}")
            time.sleep(0.25)
        if not self.wait_healthy(60):
            raise RuntimeError("the cluster did not become healthy")
        self._make_serves(self.url("authorizer"))

    @staticmethod
    def _cluster_port(hosts):
        rng = random.SystemRandom()
        for _ in range(500):
            port = rng.randrange(20000, 30000)
            if all(port_free(h, port) and port_free(h, port + 10000) for h in hosts):
                return port
        raise RuntimeError("no free cluster port")

    def _start_nodes(self):
        for node in self.nodes:
            node.proc.start()
        for node in self.nodes:
            if not node.wait_ready():
                raise RuntimeError(f"redis {node.addr} did not start; see {node.dir}/redis.log")

    def _make_serves(self, url):
        taken = [n.port for n in self.nodes]
        for i in range(2):
            serve = Serve(i, self.binary, self.workdir, url, self.replica_acks_flag, taken, self.env)
            taken += [serve.port, serve.metrics_port]
            self.serves.append(serve)

    def url(self, user, via_proxy=False):
        password = {"authorizer": "AUTHORIZER_PASSWORD", "replayer": "REPLAYER_PASSWORD",
                    "operator": "OPERATOR_PASSWORD"}[user]
        secret = self.creds[password]
        if self.profile == "S":
            port = self.proxy_port if via_proxy else self.nodes[0].port
            return f"redis://{user}:{secret}@127.0.0.1:{port}/0"
        return ",".join(f"redis://{user}:{secret}@{n.addr}/0" for n in self.nodes)

    def cli_env(self):
        """Environment for the CLI: every user's URL."""
        env = dict(self.env)
        env["AUTHORIZER_REDIS_URL"] = self.url("authorizer")
        env["AUTHORIZER_OPERATOR_REDIS_URL"] = self.url("operator")
        env["AUTHORIZER_REPLAYER_REDIS_URL"] = self.url("replayer")
        return env

    def _setup_accounts(self):
        env = self.cli_env()
        rules = self.workdir / "rules.yaml"
        rules.write_text(RULES_YAML)
        for argv in (["rules", "init"], ["rules", "load", rules]):
            rc, out = run_cli([self.binary] + argv, env)
            if rc != 0:
                raise RuntimeError(f"authorizer {' '.join(map(str, argv))} failed: {out}")
        self.accounts = make_accounts()
        pending = list(self.accounts)
        while pending:
            batch, pending = pending[:4], pending[4:]
            procs = [subprocess.Popen([str(self.binary), "account", "set", a["id"]]
                                      + [f"{c}={v}" for c, v in a["set"].items()], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
                     for a in batch]
            for account, proc in zip(batch, procs):
                out, _ = proc.communicate(timeout=60)
                if proc.returncode != 0:
                    raise RuntimeError(f"account set {account['id']} failed: {out.decode()}")

    # ----- serves and replayer

    def start_serve(self, serve, timeout=30.0):
        """Starts (or restarts) a serve; retried while Redis is not ready for it."""
        deadline = time.monotonic() + timeout
        while True:
            serve.proc.start()
            if serve.wait_ready(min(15.0, max(1.0, deadline - time.monotonic()))):
                return True
            serve.proc.kill()
            if time.monotonic() > deadline:
                self.log(f"serve-{serve.index} does not start; see {serve.proc.log_path}")
                return False
            time.sleep(0.5)

    def ensure_up(self):
        """Restarts whatever is down (the final heal)."""
        for node in self.nodes:
            if not node.proc.alive():
                node.proc.start()
                node.wait_ready()
            node.proc.send(signal.SIGCONT)
        for serve in self.serves:
            if not serve.proc.alive():
                self.start_serve(serve)
        if self.replayer and not self.replayer.alive():
            self.replayer.start()

    # ----- cluster state

    def cluster_view(self):
        """CLUSTER NODES as seen by the first node that answers."""
        for node in self.nodes:
            text = node.call("CLUSTER", "NODES")
            if text:
                return parse_cluster_nodes(text)
        return []

    def node_by_addr(self, addr):
        for node in self.nodes:
            if node.addr == addr:
                return node
        return None

    def _read_shards(self):
        """Shards (master first, then its replicas) once every node agrees on 3 x (1 + 2)."""
        views = [node.call("CLUSTER", "NODES") for node in self.nodes]
        if not all(views) or len({frozenset(_roles(parse_cluster_nodes(v))) for v in views}) != 1:
            return False
        view = parse_cluster_nodes(views[0])
        masters = sorted((n for n in view if "master" in n["flags"] and n["slots"]), key=lambda n: n["slots"][0][0])
        self.shards = []
        for master in masters:
            members = [self.node_by_addr(master["addr"]).index]
            members += [self.node_by_addr(n["addr"]).index for n in view if n["master"] == master["id"]]
            self.shards.append(members)
        return len(self.shards) == 3 and all(len(m) == 3 for m in self.shards)

    def master_of_shard(self, shard):
        """The node of the shard that says it is a master (None while none does)."""
        for index in self.shards[shard]:
            node = self.nodes[index]
            role = node.info("replication").get("role")
            if role == "master" and node.call("CLUSTER", "MYID"):
                return node
        return None

    def replicas_of_shard(self, shard):
        master = self.master_of_shard(shard)
        return [self.nodes[i] for i in self.shards[shard] if master is None or i != master.index]

    def node_id(self, node):
        return node.call("CLUSTER", "MYID")

    def slot_owner(self, slot):
        """The node serving a slot according to the cluster's slot map."""
        for node in self.nodes:
            slots = node.call("CLUSTER", "SLOTS")
            if slots:
                for lo, hi, master, *_ in slots:
                    if lo <= slot <= hi:
                        return self.node_by_addr(f"{master[0]}:{master[1]}")
                return None
        return None

    def shard_of_node(self, node):
        for k, members in enumerate(self.shards):
            if node.index in members:
                return k
        return None

    def accounts_of_shard(self, shard):
        """Accounts whose slot a node of the shard serves now (S: all)."""
        if self.profile == "S":
            return [a["id"] for a in self.accounts]
        result = []
        for account in self.accounts:
            owner = self.slot_owner(keyslot(account["id"]))
            if owner is not None and self.shard_of_node(owner) == shard:
                result.append(account["id"])
        return result

    def shard_healthy(self, shard, strict=False):
        """All members up, one master, its two replicas online (and, strict, at its offset)."""
        members = [self.nodes[i] for i in self.shards[shard]]
        if not all(m.proc.alive() for m in members):
            return False
        master = self.master_of_shard(shard)
        if master is None:
            return False
        info = master.info("replication")
        slaves = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        if len(slaves) != len(members) - 1 or any(s.get("state") != "online" for s in slaves):
            return False
        if strict and any(int(s.get("offset", -1)) != int(info.get("master_repl_offset", -2)) for s in slaves):
            return False
        return all(m.cluster_state() == "ok" for m in members)

    def healthy(self, strict=False):
        if self.profile == "S":
            node = self.nodes[0]
            return node.proc.alive() and node.call("PING") is True and self.proxy.is_alive()
        if not all(n.proc.alive() for n in self.nodes):
            return False
        if any(n.cluster_state() != "ok" for n in self.nodes):
            return False
        return all(self.shard_healthy(k, strict) for k in range(len(self.shards)))

    def wait_healthy(self, timeout, strict=False):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy(strict):
                return True
            time.sleep(0.25)
        return False

    def masters(self):
        """Every node that is a master with slots now."""
        if self.profile == "S":
            return list(self.nodes)
        result = []
        for n in self.cluster_view():
            node = self.node_by_addr(n["addr"])
            if "master" in n["flags"] and n["slots"] and node is not None:
                result.append(node)
        return result

    def describe(self):
        return {
            "profile": self.profile,
            "nodes": [{"index": n.index, "addr": n.addr, "dir": str(n.dir)} for n in self.nodes],
            "shards": self.shards,
            "serves": [{"index": s.index, "port": s.port, "metrics_port": s.metrics_port,
                        "state_dir": str(s.state_dir)} for s in self.serves],
            "replica_acks": self.replica_acks,
        }

    # ----- teardown

    def teardown(self):
        if self.nft is not None:
            self.nft.remove()
        for serve in self.serves:
            serve.proc.stop(5)
        if self.replayer:
            self.replayer.stop(5)
        for node in self.nodes:
            node.proc.kill()
        if self.proxy is not None and self.proxy.is_alive():
            self.proxy.kill()
            self.proxy.join(5)
        kill_everything()
        shutil.rmtree(self.workdir / "bin", ignore_errors=True)  # the copied executable (~90 MB)
        left = leftovers(self.workdir)
        for pid, cmdline in left:
            self.log(f"teardown: killing leftover {pid} {cmdline}")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return left
