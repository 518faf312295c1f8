"""Session validation from Python: us per ``rt.session_validate`` of a live session (bound
to the client address, JSON parsed into a ``Session``), in the process and host stores, and
in Redis when ``--redis-port`` is given. Times are the thread's CPU time
(``time.thread_time``), so that other load on the machine does not count (with Redis that
leaves out the wait for the server). Prints a markdown table."""
from __future__ import annotations

import argparse
import os
import time

import bitsec

ADDR = "203.0.113.7"
UA = "Mozilla/5.0 (X11; Linux x86_64)"


def measure(label: str, config: dict, iters: int) -> None:
    with bitsec.Runtime(config) as rt:
        c = rt.session_create("alice", "t1", ADDR, UA)
        for _ in range(1000):
            rt.session_validate(c.token, ADDR, UA)
        t0 = time.thread_time()
        for _ in range(iters):
            rt.session_validate(c.token, ADDR, UA)
        us = (time.thread_time() - t0) / iters * 1e6
        print(f"| {label} | {us:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200_000)
    ap.add_argument("--redis-port", type=int)
    a = ap.parse_args()
    print("| store | session_validate (µs) |\n|---|---:|")
    measure("process", {"sessions": {"store": "process"}}, a.iters)
    name = f"sessbench-py-{os.getpid()}"
    measure("host", {"store": {"host": {"name": name, "directory": "/tmp", "max_bytes": 33554432}},
                     "sessions": {"store": "host"}}, a.iters)
    os.unlink(f"/tmp/bitsec-{name}.region")
    if a.redis_port:
        measure("redis", {"redis": {"host": "127.0.0.1", "port": a.redis_port, "key_prefix": f"sb{os.getpid()}:"},
                          "sessions": {"store": "redis"}}, a.iters // 20)


if __name__ == "__main__":
    main()
