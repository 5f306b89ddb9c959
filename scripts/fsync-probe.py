#!/usr/bin/env python3
"""How long an fsync of the reversal journal's kind takes on this disk while
other processes write and fsync beside it (as Redis's AOF does), two ways:

  append    write a journal line at the end, fsync; truncate now and then
            (what ReversalJournal does: the file grows and shrinks)
  in-place  a preallocated file, pwrite at an offset, fdatasync (no size
            change, so no metadata to flush)

    python3 scripts/fsync-probe.py [--rounds 3] [--writers 6] [--dir /tmp]

Prints p50 / p99 / max per round. Not part of `make test`: it measures the
machine, not the product.
"""
import argparse
import multiprocessing as mp
import os
import tempfile
import time

LINE = b"A acct01 s1234567890abc\n"


def writer(path, stop):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
    while not stop.is_set():
        for _ in range(200):
            os.write(fd, b"x" * 300)
        os.fsync(fd)
        time.sleep(0.01)


def append(path, n):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
    lat = []
    for k in range(n):
        t = time.perf_counter()
        os.write(fd, LINE)
        os.fsync(fd)
        lat.append(time.perf_counter() - t)
        if k % 3 == 2:
            os.ftruncate(fd, 0)
        time.sleep(0.005)
    os.close(fd)
    return lat


def in_place(path, n):
    size = 1 << 20
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"\0" * size)
    os.fsync(fd)
    lat = []
    for k in range(n):
        t = time.perf_counter()
        os.pwrite(fd, LINE, (k * 64) % size)
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t)
        time.sleep(0.005)
    os.close(fd)
    return lat


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--syncs", type=int, default=400, help="fsyncs per way per round")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        stop = mp.Event()
        writers = [mp.Process(target=writer, args=(os.path.join(work, f"bg{i}"), stop)) for i in range(args.writers)]
        for p in writers:
            p.start()
        try:
            time.sleep(1)
            for _ in range(args.rounds):
                for name, way in (("append + fsync", append), ("in place + fdatasync", in_place)):
                    lat = sorted(way(os.path.join(work, "journal"), args.syncs))
                    ms = [x * 1e3 for x in (lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1])]
                    print(f"{name:22} p50 {ms[0]:.2f}  p99 {ms[1]:.2f}  max {ms[2]:.2f} ms", flush=True)
        finally:
            stop.set()
            for p in writers:
                p.join()


if __name__ == "__main__":
    main()
