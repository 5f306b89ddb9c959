"""A fault-injecting TCP proxy between `serve` and Redis (profile S).

The proxy runs in a process of its own (so that the chaos runner's own work
never delays the bytes it forwards) and is steered through a few shared
values: an added delay, a stall deadline, a drop-replies deadline and a
reset generation counter. Every chunk is forwarded in order, per direction:

- delay: each chunk leaves `delay_ms` after it was read;
- stall: nothing leaves before the stall deadline;
- drop replies: server->client bytes read before the deadline are discarded
  (the commands still reach Redis and run);
- reset: every open connection is closed abruptly (RST), both sides.
"""
import asyncio
import multiprocessing
import signal
import socket
import struct
import time


CTX = multiprocessing.get_context("spawn")


class ProxyControl:
    """Shared knobs, written by the runner, read by the proxy process."""

    def __init__(self):
        self.delay_ms = CTX.Value("d", 0.0, lock=False)
        self.stall_until = CTX.Value("d", 0.0, lock=False)
        self.drop_until = CTX.Value("d", 0.0, lock=False)
        self.reset_gen = CTX.Value("i", 0, lock=False)
        self.connections = CTX.Value("i", 0, lock=False)

    def delay(self, ms):
        self.delay_ms.value = float(ms)

    def stall(self, seconds):
        self.stall_until.value = time.monotonic() + seconds

    def drop_replies(self, seconds):
        self.drop_until.value = time.monotonic() + seconds

    def reset(self):
        self.reset_gen.value += 1

    def clear(self):
        self.delay_ms.value = 0.0
        self.stall_until.value = 0.0
        self.drop_until.value = 0.0


def _abort(writer):
    """Close with RST (SO_LINGER 0) rather than FIN."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class _Link:
    """One proxied connection: two pumps (read side) and two writers."""

    def __init__(self, control, client, upstream):
        self.control = control
        self.client = client  # (reader, writer)
        self.upstream = upstream
        self.tasks = []

    async def run(self):
        c_reader, c_writer = self.client
        u_reader, u_writer = self.upstream
        to_server, to_client = asyncio.Queue(), asyncio.Queue()
        self.tasks = [
            asyncio.ensure_future(self._pump(c_reader, to_server, replies=False)),
            asyncio.ensure_future(self._pump(u_reader, to_client, replies=True)),
            asyncio.ensure_future(self._drain(to_server, u_writer)),
            asyncio.ensure_future(self._drain(to_client, c_writer)),
        ]
        await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        self.abort()

    def abort(self):
        for task in self.tasks:
            task.cancel()
        _abort(self.client[1])
        _abort(self.upstream[1])

    async def _pump(self, reader, queue, replies):
        while True:
            data = await reader.read(65536)
            if not data:
                await queue.put(None)
                return
            now = time.monotonic()
            if replies and now < self.control.drop_until.value:
                continue  # the command ran; its reply is lost
            await queue.put((now + self.control.delay_ms.value / 1000.0, data))

    async def _drain(self, queue, writer):
        while True:
            item = await queue.get()
            if item is None:
                return
            release, data = item
            release = max(release, self.control.stall_until.value)
            while True:
                wait = release - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
                release = max(release, self.control.stall_until.value)
            writer.write(data)
            await writer.drain()


async def _serve(control, listen_port, upstream_host, upstream_port, ready):
    links = set()

    async def handle(reader, writer):
        try:
            upstream = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            _abort(writer)
            return
        link = _Link(control, (reader, writer), upstream)
        links.add(link)
        control.connections.value = len(links)
        try:
            await link.run()
        except (OSError, asyncio.CancelledError):
            link.abort()
        finally:
            links.discard(link)
            control.connections.value = len(links)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)
    ready.set()
    seen = control.reset_gen.value
    async with server:
        while True:
            await asyncio.sleep(0.005)
            if control.reset_gen.value != seen:
                seen = control.reset_gen.value
                for link in list(links):
                    link.abort()


def _main(control, listen_port, upstream_host, upstream_port, ready):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops it
    asyncio.run(_serve(control, listen_port, upstream_host, upstream_port, ready))


def start_proxy(listen_port, upstream_host, upstream_port):
    """Starts the proxy process; returns (process, control) once it listens."""
    control = ProxyControl()
    ready = CTX.Event()
    process = CTX.Process(
        target=_main, args=(control, listen_port, upstream_host, upstream_port, ready),
        name="chaos-proxy", daemon=True)
    process.start()
    if not ready.wait(10):
        process.kill()
        raise RuntimeError("the proxy did not start")
    return process, control
