#!/usr/bin/env python3
"""An example receiver of the authorizer's webhooks.

It verifies each delivery's signature, deduplicates by event_id and records
each delivery as one JSON line. The integration tests use it as the
independent verifier of what the authorizer sends.

    WEBHOOK_SECRET=$(cat secret) python3 scripts/webhook-receiver.py --port 9000

    --port PORT            port to listen on; 0 picks a free one
    --host HOST            address to bind (default 127.0.0.1)
    --secret-file PATH     a secret to accept (repeatable); WEBHOOK_SECRET and
                           WEBHOOK_SECRET_PREVIOUS from the environment count too
    --record FILE          append the record lines there (default: stdout)
    --tolerance SECONDS    how far the signature's t may be from now (300)
    --port-file FILE       write the bound port there once listening
    --mode ok|fail|hang    starting mode, tuned by --fail-status, --hang-seconds

A delivery is a POST (any path) with a JSON body and the headers

    Authorizer-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]
    Authorizer-Event-Id: <event_id>

Each v1 is the lowercase hex HMAC-SHA256(secret, f"{t}.{body}") over the raw
body bytes. During a secret rotation there is one v1 per secret; any one
matching is enough. A delivery that fails verification is answered 400 with
the reason, and is recorded all the same.

Test hooks, neither signed nor recorded:

    POST /_control {"mode": "ok"}
    POST /_control {"mode": "fail", "status": 500}
    POST /_control {"mode": "hang", "seconds": 10}     sleep, then 200
    POST /_control {"mode": "fail-accounts", "accounts": ["a1"], "status": 503}
    GET  /_health                                      200 ok

One record line per delivery:

    {"event_id": ..., "type": ..., "account": ..., "verified": true|false,
     "reason": "ok"|"<why not>", "status": <status answered>,
     "received_ms": <ms epoch>, "t": <header t or null>,
     "signatures": <number of v1>, "duplicate": true|false,
     "body": <parsed JSON body or null>}

"duplicate" is true when that event_id had already been answered 2xx.
"""
import argparse
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SIGNATURE_HEADER = "Authorizer-Signature"
EVENT_ID_HEADER = "Authorizer-Event-Id"
REQUIRED_FIELDS = ("event_id", "type", "account", "created_ms")
DIGITS = re.compile(r"[0-9]{1,15}")
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_BODY = 16 * 1024 * 1024


def verify(secrets, header, body, now, tolerance=300):
    """Check an Authorizer-Signature header against the raw body bytes.

    Returns (True, "ok") or (False, reason).
    """
    t, signatures, error = parse_signature(header)
    if error:
        return False, error
    if abs(now - int(t)) > tolerance:
        return False, "timestamp outside tolerance"
    signed = t.encode() + b"." + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, v1) for v1 in signatures):
            return True, "ok"
    return False, "no signature matches"


def parse_signature(header):
    """Split `t=<secs>,v1=<hex>[,v1=<hex>...]` into (t, [v1, ...], error).

    error is None only with exactly one t of digits and at least one v1,
    each 64 lowercase hex digits. Keys other than t and v1 are ignored.
    """
    if not header:
        return None, [], "missing signature header"
    stamps, signatures = [], []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return None, [], "malformed signature header"
        if key == "t":
            stamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(stamps) != 1 or not DIGITS.fullmatch(stamps[0]):
        return None, signatures, "missing or malformed t"
    if not signatures or not all(HEX_SHA256.fullmatch(s) for s in signatures):
        return stamps[0], signatures, "missing or malformed v1"
    return stamps[0], signatures, None


def check_body(body, header_event_id):
    """Return why a signed body is not a well-formed event, or None."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    missing = [field for field in REQUIRED_FIELDS if field not in body]
    if missing:
        return "body lacks " + ", ".join(missing)
    if not is_int(body["created_ms"]):
        return "created_ms is not an integer"
    if not isinstance(body["event_id"], str) and not is_int(body["event_id"]):
        return "event_id is neither a string nor an integer"
    if header_event_id != str(body["event_id"]):
        return EVENT_ID_HEADER + " does not match the body's event_id"
    return None


def is_int(value):
    """True for a JSON integer (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_json(raw):
    """The parsed body, or None if it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def parse_mode(spec, fail_status=500, hang_seconds=10):
    """Turn a /_control body into a mode; raise ValueError if it is not one."""
    if not isinstance(spec, dict):
        raise ValueError("expected a JSON object")
    kind = spec.get("mode")
    if kind == "ok":
        return {"mode": "ok"}
    if kind == "fail":
        return {"mode": kind, "status": status_of(spec, fail_status)}
    if kind == "hang":
        seconds = spec.get("seconds", hang_seconds)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("seconds must be a number >= 0")
        return {"mode": kind, "seconds": seconds}
    if kind == "fail-accounts":
        accounts = spec.get("accounts")
        if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
            raise ValueError("accounts must be a list of strings")
        return {"mode": kind, "accounts": accounts, "status": status_of(spec, fail_status)}
    raise ValueError("mode must be ok, fail, hang or fail-accounts")


def status_of(spec, default):
    """The HTTP status a failing mode answers with."""
    status = spec.get("status", default)
    if not is_int(status) or not 200 <= status <= 599:
        raise ValueError("status must be an integer from 200 to 599")
    return status


class State:
    """What requests share: secrets, the current mode, answered ids, the record."""

    def __init__(self, secrets, tolerance, mode, out, fail_status, hang_seconds):
        self.secrets = secrets
        self.tolerance = tolerance
        self.mode = mode
        self.out = out
        self.fail_status = fail_status
        self.hang_seconds = hang_seconds
        self.answered = set()
        self.lock = threading.Lock()

    def set_mode(self, spec):
        """Switch mode from a /_control body; return the new mode."""
        mode = parse_mode(spec, self.fail_status, self.hang_seconds)
        with self.lock:
            self.mode = mode
        return mode

    def answer_for(self, account):
        """(status, seconds to wait first) the current mode gives this account."""
        with self.lock:
            mode = self.mode
        if mode["mode"] == "fail":
            return mode["status"], 0
        if mode["mode"] == "hang":
            return 200, mode["seconds"]
        if mode["mode"] == "fail-accounts" and account in mode["accounts"]:
            return mode["status"], 0
        return 200, 0

    def record(self, entry):
        """Mark the entry duplicate or not, remember 2xx answers, write the line."""
        event_id = entry["event_id"]
        with self.lock:
            entry["duplicate"] = event_id is not None and event_id in self.answered
            if event_id is not None and 200 <= entry["status"] < 300:
                self.answered.add(event_id)
            if self.out is not None:
                self.out.write(json.dumps(entry) + "\n")
                self.out.flush()

    def close(self):
        """Stop recording; later lines are dropped."""
        with self.lock:
            if self.out is not None and self.out is not sys.stdout:
                self.out.close()
            self.out = None


class Receiver(BaseHTTPRequestHandler):
    """Answers deliveries per the current mode, and the test hooks."""

    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, format, *args):
        """Stay quiet: the record is the log."""

    def do_GET(self):
        """Only /_health is served."""
        if urlsplit(self.path).path == "/_health":
            self.reply(200, b"ok", "text/plain")
        else:
            self.reply(404, b"not found", "text/plain")

    def do_POST(self):
        """A mode change on /_control, a delivery anywhere else."""
        raw = self.read_body()
        if raw is None:
            self.close_connection = True
            self.reply(400, b"unreadable body", "text/plain")
        elif urlsplit(self.path).path == "/_control":
            self.control(raw)
        else:
            self.deliver(raw)

    def control(self, raw):
        """Switch mode; answer the mode now in force."""
        try:
            mode = self.state.set_mode(parse_json(raw))
        except ValueError as error:
            self.reply(400, str(error).encode(), "text/plain")
            return
        self.reply(200, json.dumps(mode).encode())

    def deliver(self, raw):
        """Verify, record, then answer one delivery."""
        received_ms = int(time.time() * 1000)
        header = self.headers.get(SIGNATURE_HEADER)
        t, signatures, _ = parse_signature(header)
        ok, reason = verify(self.state.secrets, header, raw, time.time(), self.state.tolerance)
        body = parse_json(raw)
        if ok:
            problem = check_body(body, self.headers.get(EVENT_ID_HEADER))
            ok, reason = problem is None, problem or reason
        fields = body if isinstance(body, dict) else {}
        event_id = fields.get("event_id", self.headers.get(EVENT_ID_HEADER))
        if not isinstance(event_id, (str, int)):
            event_id = None
        status, delay = self.state.answer_for(fields.get("account")) if ok else (400, 0)
        time.sleep(delay)
        self.state.record({
            "event_id": event_id, "type": fields.get("type"),
            "account": fields.get("account"), "verified": ok, "reason": reason,
            "status": status, "received_ms": received_ms,
            "t": int(t) if t is not None else None,
            "signatures": len(signatures), "duplicate": None, "body": body,
        })
        if not ok:
            self.reply(status, reason.encode(), "text/plain")
        elif status < 300:
            self.reply(status, json.dumps({"received": event_id}).encode())
        else:
            self.reply(status, json.dumps({"error": "failing on purpose"}).encode())

    def read_body(self):
        """The raw request body, or None if it cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return None
        if not 0 <= length <= MAX_BODY:
            return None
        data = self.rfile.read(length)
        return data if len(data) == length else None

    def read_chunked(self):
        """A chunked body, trailers skipped, or None if malformed."""
        chunks, total = [], 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";")[0], 16)
            except ValueError:
                return None
            total += size
            if size < 0 or total > MAX_BODY:
                return None
            if size == 0:
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(chunks)

    def reply(self, status, payload, content_type="application/json"):
        """Send a whole response; a client that already left is not an error."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True


class Server(ThreadingHTTPServer):
    """A threading HTTP server with a deeper accept queue and quiet disconnects."""

    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        """A client hanging up is routine; anything else is still reported."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def load_secrets(paths, environ):
    """Secrets from each --secret-file (stripped), then the environment."""
    secrets = []
    for path in paths:
        with open(path, encoding="utf-8") as file:
            secrets.append(file.read().strip())
    for name in ("WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS"):
        secrets.append(environ.get(name, "").strip())
    return [secret for secret in secrets if secret]


def write_port_file(path, port):
    """Write the port to path atomically: a temporary file, then a rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(f"{port}\n")
    os.replace(tmp, path)


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(description="Example receiver of the authorizer's webhooks.")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret-file", action="append", default=[], metavar="PATH")
    parser.add_argument("--record", metavar="FILE", help="append record lines here (default stdout)")
    parser.add_argument("--tolerance", type=float, default=300, metavar="SECONDS")
    parser.add_argument("--port-file", metavar="FILE")
    parser.add_argument("--mode", choices=("ok", "fail", "hang"), default="ok")
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--hang-seconds", type=float, default=10)
    args = parser.parse_args(argv)
    try:
        args.secrets = load_secrets(args.secret_file, os.environ)
        args.initial_mode = parse_mode({"mode": args.mode}, args.fail_status, args.hang_seconds)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    if not args.secrets:
        parser.error("no secret: give --secret-file or set WEBHOOK_SECRET")
    return args


def main(argv=None):
    """Listen until SIGTERM or SIGINT, then exit 0."""
    args = parse_args(argv)
    out = open(args.record, "a", encoding="utf-8") if args.record else sys.stdout
    Receiver.state = State(args.secrets, args.tolerance, args.initial_mode, out,
                           args.fail_status, args.hang_seconds)
    server = Server((args.host, args.port), Receiver)
    host, port = server.server_address[:2]

    def stop(signum, frame):
        """Shut the server down from another thread (serve_forever is in this one)."""
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        Receiver.state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
