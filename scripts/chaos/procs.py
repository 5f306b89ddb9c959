"""Child processes and ports for a chaos run.

Every process is started in a session (process group) of its own and
remembered until it is reaped, so that `kill_everything()` (called from
`finally`, `atexit` and the signal handlers) leaves nothing behind, and
`leftovers()` can prove it.
"""
import atexit
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

_LIVE = set()  # Popen objects started and not yet reaped


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


def leftovers(workdir):
    """Processes still running whose working directory or command line is under workdir."""
    found, needle = [], str(workdir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if needle in cmdline or cwd.startswith(needle):
            found.append((int(entry.name), cmdline.strip()[:120]))
    return found


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
