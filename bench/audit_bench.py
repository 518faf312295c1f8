"""Audit: bitsec_audit_emit vs Python logging + json.dumps to a FileHandler (the incumbent).

Same event, same machine, one run. Prints a markdown table: µs per event (emit latency as
the caller sees it, averaged) and sustained events/s (emits then a flush, so the writer's
work is included). Ratio = logging time / bitsec time.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time

import bitsec

EVENT = {
    "type": "authentication", "subtype": "failed_login", "result": "failure",
    "user_id": "user-4711", "ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    "reason": "invalid_password", "details": {"attempt": 3, "method": "password"},
}
N = int(os.environ.get("AUDIT_BENCH_N", "100000"))
N_FSYNC = int(os.environ.get("AUDIT_BENCH_N_FSYNC", "2000"))
#: CPU µs per event: the calling thread's (what the caller pays) and the process's (with the writer).
CPU: dict[str, float] = {}


class FsyncFileHandler(logging.FileHandler):
    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.flush()
        os.fsync(self.stream.fileno())


def logging_run(path: str, n: int, fsync: bool) -> float:
    logger = logging.getLogger(f"bench-{path}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    h: logging.Handler = FsyncFileHandler(path) if fsync else logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(h)
    ev = EVENT
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for _ in range(n):
        logger.info(json.dumps(ev))
    dt = time.perf_counter() - t0
    CPU[path] = (time.thread_time() - c0) / n * 1e6
    logger.removeHandler(h)
    h.close()
    return dt / n * 1e6


def bitsec_rt(path: str, durability: str) -> bitsec.Runtime:
    return bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": path}], "durability": durability,
                                     "queue_capacity": 1 << 20, "full_policy": "block", "block_timeout_ms": 10000}})


def bitsec_run(path: str, n: int, durability: str, pre: bool = False) -> tuple[float, float]:
    """Returns (µs per emit, sustained events/s including the final flush)."""
    rt = bitsec_rt(path, durability)
    ev: object = json.dumps(EVENT, separators=(",", ":")).encode() if pre else EVENT
    emit = rt.audit_emit
    emit(ev)
    rt.audit_flush()
    p0 = time.process_time()
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for _ in range(n):
        emit(ev)
    t1 = time.perf_counter()
    c1 = time.thread_time()
    rt.audit_flush()
    t2 = time.perf_counter()
    CPU[path] = (c1 - c0) / n * 1e6
    CPU[path + ":total"] = (time.process_time() - p0) / n * 1e6
    rt.close()
    return (t1 - t0) / n * 1e6, n / (t2 - t0)


def bitsec_threads(path: str, threads: int, per: int, durability: str) -> float:
    rt = bitsec_rt(path, durability)
    rt.audit_emit(EVENT)
    rt.audit_flush()
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(per):
            rt.audit_emit(EVENT)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    rt.audit_flush()
    dt = time.perf_counter() - t0
    rt.close()
    return threads * per / dt


ENC_US = 0.0
CALL_US = 0.0


def floor() -> None:
    """What any ctypes-based emit pays in Python: encoding the dict, one foreign call."""
    global ENC_US, CALL_US
    import timeit
    from bitsec import _native
    enc = json.JSONEncoder(separators=(",", ":")).encode
    n = 50000
    ENC_US = timeit.timeit(lambda: enc(EVENT).encode("ascii"), number=n) / n * 1e6
    fn = _native.abi_version
    CALL_US = timeit.timeit(fn, number=n) / n * 1e6


def main() -> None:
    floor()
    d = tempfile.mkdtemp(prefix="bitsec-audit-bench-")
    try:
        p = lambda name: os.path.join(d, name)  # noqa: E731
        log_us = logging_run(p("logging.log"), N, False)
        logf_us = logging_run(p("logging-fsync.log"), N_FSYNC, True)
        b_none, s_none = bitsec_run(p("none.log"), N, "none")
        b_batch, s_batch = bitsec_run(p("batched.log"), N, "batched")
        b_pre, s_pre = bitsec_run(p("pre.log"), N, "batched", pre=True)
        b_every, s_every = bitsec_run(p("every.log"), N_FSYNC, "every_event")
        t8 = bitsec_threads(p("every8.log"), 8, N_FSYNC, "every_event")
        for f in ("batched.log", "every.log", "every8.log"):
            r = bitsec.audit_verify([p(f)])
            assert r.intact, r
    finally:
        shutil.rmtree(d, ignore_errors=True)
    def c(name: str) -> float:
        return CPU[p(name)]

    print(f"## audit (Python {sys.version.split()[0]}, {N} events; fsync rows {N_FSYNC})\n")
    print("Wall µs/event is what the caller waited (on a shared machine it includes waiting for a core);")
    print("caller CPU is the emitting thread's CPU time per event (load-independent); total CPU adds the writer thread.\n")
    print("| operation | wall µs/event | caller CPU µs/event | total CPU µs/event | events/s | vs logging (wall) | vs logging (caller CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| logging + json.dumps → FileHandler | {log_us:.2f} | {c('logging.log'):.2f} | {c('logging.log'):.2f} | {1e6 / log_us:,.0f} | 1.0× | 1.0× |")
    for label, name, us, sps in [("bitsec audit_emit(dict), durability none", "none.log", b_none, s_none),
                                 ("bitsec audit_emit(dict), batched", "batched.log", b_batch, s_batch),
                                 ("bitsec audit_emit(bytes), batched", "pre.log", b_pre, s_pre)]:
        print(f"| {label} | {us:.2f} | {c(name):.2f} | {CPU[p(name) + ':total']:.2f} | {sps:,.0f} | "
              f"{log_us / us:.1f}× | {c('logging.log') / c(name):.1f}× |")
    print(f"| logging + json.dumps → FileHandler + fsync per event | {logf_us:.2f} | {c('logging-fsync.log'):.2f} | | {1e6 / logf_us:,.0f} | 1.0× | |")
    print(f"| bitsec audit_emit(dict), every_event, 1 thread | {b_every:.2f} | {c('every.log'):.2f} | | {s_every:,.0f} | {logf_us / b_every:.1f}× | |")
    print(f"| bitsec audit_emit(dict), every_event, 8 threads | {1e6 / t8:.2f} (aggregate) | | | {t8:,.0f} | {logf_us / (1e6 / t8):.1f}× | |")
    print("\nPython-side floor, same run: json encoding of the event dict "
          f"{ENC_US:.2f} µs, an empty ctypes call {CALL_US:.2f} µs.")

if __name__ == "__main__":
    main()
