#!/usr/bin/env python3
"""Interoperability check of the ISO 8583 port with pyiso8583 (pip install pyiso8583).

Encodes an 0200 purchase with pyiso8583's `default_ascii` spec, sends it to
`serve --iso8583-port` with the 2-byte big-endian length prefix, decodes the
answer with the same spec and checks it: 0210, DE39 00, DE38 present, DE11
and DE37 echoed. Also an 0800 echo test. Prints the exchange in hex and
"interop ok" on success; exits 1 otherwise.

    python3 scripts/iso8583_interop.py --port 7071 --pan 123 --amount 1010
    # over TLS: --tls-ca ca.pem [--tls-cert terminal.pem --tls-key terminal.key]
"""
import argparse
import socket
import ssl
import struct
import sys

import iso8583
from iso8583.specs import default_ascii as spec


def exchange(sock, doc):
    raw, _ = iso8583.encode(doc, spec)
    sock.sendall(struct.pack(">H", len(raw)) + bytes(raw))
    header = recv_exactly(sock, 2)
    (length,) = struct.unpack(">H", header)
    answer = recv_exactly(sock, length)
    decoded, _ = iso8583.decode(answer, spec)
    return bytes(raw), answer, decoded


def recv_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise SystemExit("connection closed by the server")
        data += chunk
    return data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--pan", default="123")
    parser.add_argument("--amount", type=int, default=1010, help="cents")
    parser.add_argument("--stan", default="000123")
    parser.add_argument("--rrn", default=None)
    parser.add_argument("--tls-ca", help="speak TLS, trusting this CA (PEM)")
    parser.add_argument("--tls-cert", help="client certificate (PEM), with --tls-key")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    rrn = args.rrn or ("PY%010d" % (args.amount * 7 + int(args.stan)))

    purchase = {
        "t": "0200",
        "2": args.pan,
        "3": "000000",
        "4": "%012d" % args.amount,
        "7": "1126120000",
        "11": args.stan,
        "12": "120000",
        "13": "1126",
        "18": "5411",
        "37": rrn.ljust(12),
        "41": "TERM0001",
        "42": "MERCHANT0000001",
        "43": "PADARIA DO ZE".ljust(25) + "SAO PAULO".ljust(13) + "BR",
        "49": "986",
    }
    sock = socket.create_connection((args.host, args.port), timeout=10)
    if args.tls_ca:
        context = ssl.create_default_context(cafile=args.tls_ca)
        if args.tls_cert:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        sock = context.wrap_socket(sock, server_hostname=args.host)
    with sock:
        sent, received, answer = exchange(sock, purchase)
        print("request  %s" % sent.hex())
        print("answer   %s" % received.hex())
        print("answer   %s" % received.decode("ascii"))
        print("decoded  %s" % {k: v for k, v in answer.items() if k not in ("p",)})
        problems = []
        if answer.get("t") != "0210":
            problems.append("MTI %r, expected 0210" % answer.get("t"))
        if answer.get("39") != "00":
            problems.append("DE39 %r, expected 00" % answer.get("39"))
        if len(answer.get("38", "")) != 6:
            problems.append("DE38 missing")
        for field in ("2", "3", "4", "7", "11", "37", "41", "42"):
            if answer.get(field) != purchase[field]:
                problems.append("DE%s %r not echoed (%r)" % (field, answer.get(field), purchase[field]))

        _, _, echo = exchange(sock, {"t": "0800", "7": "1126120000", "11": "000124", "70": "301"})
        if echo.get("t") != "0810" or echo.get("39") != "00" or echo.get("11") != "000124":
            problems.append("echo answered %r" % echo)

    if problems:
        print("interop FAILED: " + "; ".join(problems))
        sys.exit(1)
    print("interop ok")


if __name__ == "__main__":
    main()
