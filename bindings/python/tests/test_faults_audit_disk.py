"""The audit file's disk full (docs/faults.md).

A child process emits from four threads, then its file size limit (RLIMIT_FSIZE, SIGXFSZ
ignored, so a write past it fails with EFBIG as on a full disk; a write that crosses it is
cut short, as ENOSPC cuts one) is lowered to just above the file's size: the disk is
"full". Emits go on, then the limit is raised again ("space returns"). For every
durability mode and queue policy the parent checks that:

- emits follow the configured policy: every_event fails fast with BitsecIOError (the record
  stays queued); none/batched keep acknowledging until the queue is full, then drop (seq
  None) or block and time out (BitsecTimeoutError), as docs/audit.md says; no emit hangs;
- the failure is counted and reported: audit_stats()["file_failure"], the
  bitsec_audit_sink_failing gauge and bitsec_audit_sink_errors_total{sink="file"}; a flush
  fails with BitsecIOError; drops are counted and recorded;
- nothing acknowledged is lost: every sequence number returned is in the file once, and
  every emit that failed with BitsecIOError is written too once space returns;
- writing resumes (a sink_recovered record, later emits durable) and the chain verifies,
  with no torn record.

test_audit.py's test_file_sink_failure_keeps_records_and_reports_recovery is the
single-threaded every_event case; this file adds the load, the other modes and the batch
larger than one write chunk (the regression test of the duplicate records found here).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitsec import audit_verify

CHILD = textwrap.dedent(r"""
    import json, os, resource, signal, sys, threading, time
    import bitsec

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
    path = sys.argv[1]
    p = json.loads(sys.argv[2])
    pad, before_n, full_s, full_n, headroom, partial = p["pad"], p["before_n"], p["full_s"], p["full_n"], p["headroom"], p["partial"]
    rt = bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": path}], "durability": p["durability"],
                                   "full_policy": p["policy"], "queue_capacity": p["capacity"], "block_timeout_ms": 50,
                                   "durable_timeout_ms": 3000}})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    out = {"phases": {}, "slowest": 0.0}
    lock = threading.Lock()

    def emit(phase, k):
        t0 = time.monotonic()
        try:
            seq = rt.audit_emit({"type": "application", "subtype": phase, "actor": phase + "-" + k, "details": {"pad": "x" * pad}})
            res = ["ok", seq]
        except bitsec.BitsecError as e:
            res = [type(e).__name__, None]
        except BaseException as e:
            res = ["unexpected " + type(e).__name__ + ": " + str(e), None]
        dt = time.monotonic() - t0
        with lock:
            out["phases"].setdefault(phase, []).append(res)
            out["slowest"] = max(out["slowest"], dt)

    def threads(phase, body):
        ts = [threading.Thread(target=body, args=(phase, t)) for t in range(4)]
        for t in ts: t.start()
        for t in ts: t.join()

    def n_events(phase, t, n=before_n):
        for i in range(n):
            emit(phase, "t%d-%d" % (t, i))

    def for_time(phase, t):
        end = time.monotonic() + full_s
        i = 0
        while time.monotonic() < end:
            emit(phase, "t%d-%d" % (t, i))
            i += 1

    threads("before", n_events)
    rt.audit_flush()
    # The disk is full: at most `headroom` more bytes fit.
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + headroom, hard))
    threads("full", (lambda phase, t: n_events(phase, t, full_n)) if full_n else for_time)
    time.sleep(0.3)
    st = rt.audit_stats()
    out["during"] = {"file_failure": st["file_failure"], "dropped": st["dropped"], "metrics": rt.metrics_text()}
    try:
        rt.audit_flush()
        out["during"]["flush"] = "ok"
    except bitsec.BitsecError as e:
        out["during"]["flush"] = type(e).__name__
    if partial:
        # Space returns in part: enough for some whole records, not for the whole backlog.
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + partial, hard))
        time.sleep(2.5)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))   # space returns
    deadline = time.monotonic() + 15
    def drained():
        st = rt.audit_stats()
        return st["file_failure"] is None and st["queued"] == 0
    while not drained() and time.monotonic() < deadline:
        time.sleep(0.02)
    out["recovered"] = drained()
    threads("after", lambda phase, t: n_events(phase, t, 10))
    rt.audit_flush()
    st = rt.audit_stats()
    out["final"] = {"dropped": st["dropped"], "metrics": rt.metrics_text()}
    rt.close()
    print(json.dumps(out))
""")

# The bound on one emit: block_timeout_ms, or durable_timeout_ms in every_event mode, plus a
# generous margin for a loaded machine. A bound on hangs, not a performance assertion.
EMIT_BOUND_S = 3.0 + 2.0


def run_child(path: Path, durability: str, policy: str, capacity: int = 256, pad: int = 200,
              before_n: int = 25, full_s: float = 0.6, full_n: int = 0, headroom: int = 1500, partial: int = 0) -> dict:
    params = {"durability": durability, "policy": policy, "capacity": capacity, "pad": pad, "before_n": before_n,
              "full_s": full_s, "full_n": full_n, "headroom": headroom, "partial": partial}
    args = [sys.executable, "-c", CHILD, str(path), json.dumps(params)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


def check_trail(path: Path, out: dict) -> list[dict]:
    report = audit_verify([path])
    assert report.intact, report.problem
    assert report.torn_tail is None
    recs = records(path)
    seqs = [r["seq"] for r in recs]
    assert len(seqs) == len(set(seqs)), "a record was written twice"
    acknowledged = [seq for phase in out["phases"].values() for kind, seq in phase if kind == "ok" and seq]
    in_file = set(seqs)
    assert [s for s in acknowledged if s not in in_file] == [], "acknowledged records lost"
    # Every caller event that was queued (acknowledged, or every_event's BitsecIOError) is
    # in the file exactly once; dropped ones are not, and their count is recorded.
    actors = [r["actor"] for r in recs if r["type"] == "application"]
    assert len(actors) == len(set(actors))
    dropped = sum(r["details"]["count"] for r in recs if r["subtype"] == "events_dropped")
    assert dropped == out["final"]["dropped"]
    return recs


MODES = [("every_event", "drop"), ("every_event", "block"), ("batched", "drop"), ("batched", "block"),
         ("none", "drop"), ("none", "block")]


@pytest.mark.parametrize("durability,policy", MODES)
def test_disk_full_under_load(tmp_path: Path, durability: str, policy: str) -> None:
    path = tmp_path / "audit.log"
    out = run_child(path, durability, policy)
    phases = out["phases"]
    assert out["slowest"] < EMIT_BOUND_S, out["slowest"]
    assert all(kind == "ok" and seq for kind, seq in phases["before"])
    assert all(kind == "ok" and seq for kind, seq in phases["after"]), phases["after"]
    full = [kind if kind != "ok" else ("ok" if seq else "dropped") for kind, seq in phases["full"]]
    kinds = set(full)
    if durability == "every_event":
        # Fail fast: the record stays queued and is written when the disk has room again;
        # a full queue drops (drop) or times out (block) like in the other modes.
        assert "BitsecIOError" in kinds, kinds
        # (The first records may still fit in the little room left.)
        assert kinds <= {"BitsecIOError", "ok", "dropped" if policy == "drop" else "BitsecTimeoutError"}, kinds
    else:
        # Emits never wait for the disk: acknowledged until the queue is full, then the policy.
        assert "ok" in kinds, kinds
        assert kinds <= {"ok", "dropped" if policy == "drop" else "BitsecTimeoutError"}, kinds
        assert len(kinds) == 2, f"the queue never filled: {kinds}"
    during = out["during"]
    assert during["file_failure"] and "write failed" in during["file_failure"]
    assert during["flush"] == "BitsecIOError"
    assert metric(during["metrics"], "bitsec_audit_sink_failing") == 1
    assert metric(during["metrics"], 'bitsec_audit_sink_errors_total{sink="file"}') >= 1
    assert out["recovered"]
    assert metric(out["final"]["metrics"], "bitsec_audit_sink_failing") == 0
    lost = full.count("dropped") + full.count("BitsecTimeoutError")
    assert out["final"]["dropped"] == lost

    recs = check_trail(path, out)
    subtypes = [r["subtype"] for r in recs]
    assert "sink_recovered" in subtypes
    recovered = next(r for r in recs if r["subtype"] == "sink_recovered")
    assert recovered["details"]["sink"] == "file" and recovered["details"]["records_lost"] == 0
    # The events of the full phase that were queued are all there, before the later ones.
    queued_full = full.count("ok") + full.count("BitsecIOError")
    assert subtypes.count("full") == queued_full
    assert max(i for i, s in enumerate(subtypes) if s == "full") < min(i for i, s in enumerate(subtypes) if s == "after")
    assert subtypes[-1] == "stopped"


def test_backlog_larger_than_one_write_returns_in_part(tmp_path: Path) -> None:
    # A long outage queues more than one write chunk (4 MiB). When the disk has room for the
    # first chunk but not the second, the first one is written and the write fails: the
    # retry must not write the first chunk's records again (they were, before the fix: the
    # trail then held each of them twice and failed verification).
    path = tmp_path / "audit.log"
    out = run_child(path, "none", "block", capacity=100_000, pad=8000, before_n=5, full_n=300,
                    headroom=0, partial=5 << 20)
    full = [kind for kind, seq in out["phases"]["full"]]
    assert set(full) == {"ok"}
    assert len(full) * 8000 > 6 << 20, len(full)  # the backlog is well over one chunk
    recs = check_trail(path, out)
    assert [r["subtype"] for r in recs].count("full") == len(full)
