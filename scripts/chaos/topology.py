"""The processes of a chaos run: Redis (one node, or a 3x3 cluster on
distinct loopback addresses), two `authorizer serve`, one `authorizer
replay`, and in profile S the fault proxy between serve and Redis.

Every process is started in a session (process group) of its own and
remembered until it is reaped, so that `kill_everything()` (called from
`finally`, `atexit` and the signal handlers) leaves nothing behind.
"""
import atexit
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = ROOT / ".build" / "debug" / "authorizer"
NODE_TIMEOUT_MS = 2000

_LIVE = set()  # Popen objects started and not yet reaped


def import_redis():
    """redis-py: from the interpreter's path, else Debian's python3-redis."""
    try:
        import redis  # noqa: F401
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        import redis  # noqa: F401
    return sys.modules["redis"]


# --------------------------------------------------------------- processes

class Proc:
    """A child process (own process group), restartable with the same argv."""

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name, self.argv, self.log_path = name, [str(a) for a in argv], Path(log_path)
        self.env, self.cwd = env, cwd
        self.popen = None
        self.starts = 0

    def start(self):
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True)
        _LIVE.add(self.popen)
        self.starts += 1

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig):
        if self.alive():
            os.kill(self.popen.pid, sig)

    def kill(self):
        """SIGKILL the whole group and reap it."""
        _kill_group(self.popen, signal.SIGKILL)

    def stop(self, timeout=5.0):
        """SIGTERM (after SIGCONT), then SIGKILL if it lingers."""
        if not self.alive():
            _reap(self.popen)
            return
        _signal_group(self.popen, signal.SIGCONT)
        _signal_group(self.popen, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


def _signal_group(popen, sig):
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(popen):
    if popen is None:
        return
    try:
        popen.wait(5)
    except subprocess.TimeoutExpired:
        return
    _LIVE.discard(popen)


def _kill_group(popen, sig):
    if popen is None:
        return
    if popen.poll() is None:  # not reaped: its pid (= pgid) is still ours
        _signal_group(popen, sig)
    _reap(popen)


def kill_everything():
    """Kill every process group this run started (idempotent)."""
    for popen in list(_LIVE):
        if popen.poll() is None:
            _signal_group(popen, signal.SIGCONT)
            _signal_group(popen, signal.SIGKILL)
    for popen in list(_LIVE):
        _reap(popen)


atexit.register(kill_everything)


def run_cli(argv, env, timeout=60, cwd=None):
    """Runs a short command; returns (exit status, output)."""
    proc = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                          start_new_session=True)
    return proc.returncode, proc.stdout.decode(errors="replace")


# --------------------------------------------------------------- ports

def port_free(host, port):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host="127.0.0.1", taken=()):
    """A free port (and its +10000 cluster bus port) on host."""
    rng = random.SystemRandom()
    for _ in range(2000):
        port = rng.randrange(20000, 30000)
        if port not in taken and port_free(host, port) and port_free(host, port + 10000):
            return port
    raise RuntimeError(f"no free port on {host}")


def wait_tcp(host, port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def http_get(url, timeout=1.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


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

    def __init__(self, index, binary, workdir, redis_url, replica_acks, taken):
        self.index = index
        self.port = free_port(taken=taken)
        self.metrics_port = free_port(taken=taken + [self.port])
        self.state_dir = Path(workdir) / f"serve-{index}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "serve", "--host", "127.0.0.1", "--port", self.port,
                "--metrics-port", self.metrics_port, "--state-dir", self.state_dir,
                "--replica-acks", replica_acks, "--redis", redis_url]
        self.proc = Proc(f"serve-{index}", argv, self.state_dir / "serve.log", env=dict(os.environ))

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
    """The reversals still owed in a journal file: `A` lines not followed by `D`."""
    owed = set()
    try:
        text = Path(path).read_text()
    except OSError:
        return owed
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "A":
            owed.add((parts[1], parts[2]))
        elif len(parts) == 3 and parts[0] == "D":
            owed.discard((parts[1], parts[2]))
    return owed


# --------------------------------------------------------------- accounts

def make_accounts():
    """40 accounts: 3 hot, 5 small (51s and splits), 32 ordinary."""
    accounts = []
    for i in range(3):
        accounts.append({"id": f"hot{i}", "kind": "hot", "set": {"FOOD": "100000.00", "MEAL": "100000.00", "CASH": "100000.00"}})
    for i in range(5):
        accounts.append({"id": f"small{i}", "kind": "small", "set": {"FOOD": "30.00", "MEAL": "20.00", "CASH": "25.00"}})
    for i in range(32):
        accounts.append({"id": f"acct{i:02d}", "kind": "normal", "set": {"FOOD": "50000.00", "MEAL": "50000.00", "CASH": "50000.00"}})
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
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes, self.serves, self.shards = [], [], []
        self.proxy = self.proxy_control = self.replayer = None
        self.creds, self.accounts, self.nft = {}, [], None
        self.db = self.workdir / "statements.sqlite"

    # ----- start

    def start(self):
        if not self.binary.exists():
            raise RuntimeError(f"{self.binary} is missing (build it with `swift build`)")
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
                             self.workdir / "replayer.log", env=dict(os.environ))
        self.replayer.start()

    def _start_single(self):
        port = free_port()
        self.nodes = [RedisNode(0, "127.0.0.1", port, self.workdir, self.creds, cluster=False)]
        self._start_nodes()
        from proxy import start_proxy
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
        if not self.wait_healthy(60):
            raise RuntimeError("the cluster did not become healthy")
        self._read_shards()
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
            serve = Serve(i, self.binary, self.workdir, url, self.replica_acks, taken)
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

    def cli_env(self, user="authorizer"):
        env = dict(os.environ)
        env["AUTHORIZER_REDIS_URL"] = self.url(user)
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
        view = self.cluster_view()
        masters = sorted((n for n in view if "master" in n["flags"] and n["slots"]), key=lambda n: n["slots"][0][0])
        self.shards = []
        for master in masters:
            members = [self.node_by_addr(master["addr"]).index]
            members += [self.node_by_addr(n["addr"]).index for n in view if n["master"] == master["id"]]
            self.shards.append(members)

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
        return all((m.info("cluster").get("cluster_state") == "ok") for m in members)

    def healthy(self, strict=False):
        if self.profile == "S":
            node = self.nodes[0]
            return node.proc.alive() and node.call("PING") is True and self.proxy.is_alive()
        if not all(n.proc.alive() for n in self.nodes):
            return False
        if any(n.info("cluster").get("cluster_state") != "ok" for n in self.nodes):
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


def dump_json(path, value):
    Path(path).write_text(json.dumps(value, indent=1, sort_keys=True, default=str))
