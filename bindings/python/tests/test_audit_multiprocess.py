"""One audit trail for the host: several processes append to one shared chain (a file sink
with "shared": true), a writer killed with SIGKILL loses nothing acknowledged, runtimes
opened before fork() work in the child (audit and Redis), and gunicorn --preload workers
write one verifying trail. Real processes, a real redis-server, real HTTP."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import bitsec
from bitsec import ConfigError, UnsupportedError, audit_verify


def shared_cfg(path: Path, durability: str = "every_event", **section) -> dict:
    sec = {"sinks": [{"type": "file", "path": str(path), "shared": True}], "durability": durability}
    sec.update(section)
    return {"audit": sec}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _emit_many(path: str, worker: int, n: int, q) -> None:  # a multiprocessing target
    with bitsec.Runtime(shared_cfg(Path(path))) as rt:
        acked = [(k, rt.audit_emit({"type": "application", "subtype": "mp", "details": {"w": worker, "k": k}}))
                 for k in range(n)]
    q.put((worker, acked))


def run_workers(method: str, target: Any, args: list[tuple]) -> dict:
    """Runs ``target(*a, queue)`` for each ``a`` of ``args`` in its own process; each puts
    (worker, result) on the queue. Returns the results by worker once all exited cleanly."""
    ctx = mp.get_context(method)
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, q)) for a in args]
    for pr in procs:
        pr.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for pr in procs:
        pr.join(60)
        assert pr.exitcode == 0
    return results


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_append_to_one_chain(tmp_path: Path, method: str) -> None:
    p = tmp_path / "audit.log"
    results = run_workers(method, _emit_many, [(str(p), w, 150) for w in range(4)])
    r = audit_verify([p])
    assert r.intact, r.problem
    assert r.first_seq == 1 and r.torn_tail is None
    by_marker: dict[tuple[int, int], list[int]] = {}
    for rec in records(p):
        if rec["type"] == "application":
            by_marker.setdefault((rec["details"]["w"], rec["details"]["k"]), []).append(rec["seq"])
    # Every acknowledged record exactly once, under the sequence number its emit returned.
    assert len(by_marker) == 4 * 150
    for w, acked in results.items():
        for k, seq in acked:
            assert by_marker[(w, k)] == [seq]
    # Each process says it started (pid) on the one chain; each closed cleanly.
    subs = [rec["subtype"] for rec in records(p) if rec["type"] == "audit"]
    assert subs.count("started") == 4 and subs.count("stopped") == 4
    assert r.records == 4 * 150 + 8



def _submit_many(path: str, worker: int, q) -> None:  # a multiprocessing target
    with bitsec.Runtime(shared_cfg(Path(path), durability="batched")) as rt:
        accepted = sum(rt.audit_submit([{"type": "application", "subtype": "mp", "details": {"w": worker, "k": k}}
                                        for k in range(b * 50, b * 50 + 50)]) for b in range(4))
        rt.audit_submit(['{"type": "lunch"}'])  # refused by the writer: its event_rejected record, on the chain
    q.put((worker, accepted))


def test_submitted_batches_of_several_processes_land_on_one_chain(tmp_path: Path) -> None:
    # bitsec_audit_submit on a shared file: the writer validates each process's events and
    # chains them after the host's head, each event once, a refusal in its place.
    p = tmp_path / "audit.log"
    results = run_workers("fork", _submit_many, [(str(p), w) for w in range(3)])
    assert results == {0: 200, 1: 200, 2: 200}
    r = audit_verify([p])
    assert r.intact, r.problem
    assert r.events_rejected == 3
    seen = sorted((rec["details"]["w"], rec["details"]["k"]) for rec in records(p) if rec["type"] == "application")
    assert seen == [(w, k) for w in range(3) for k in range(200)]
    # one process's events stay in its order
    for w in range(3):
        ks = [rec["details"]["k"] for rec in records(p) if rec["type"] == "application" and rec["details"]["w"] == w]
        assert ks == list(range(200))

WRITER = textwrap.dedent("""
    import sys, bitsec
    path, name, durability = sys.argv[1], sys.argv[2], sys.argv[3]
    rt = bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": path, "shared": True}],
                                   "durability": durability, "queue_capacity": 256, "full_policy": "block",
                                   "block_timeout_ms": 10000}})
    k = 0
    limit = int(sys.argv[4])
    while limit == 0 or k < limit:
        seq = rt.audit_emit({"type": "session", "subtype": "tick", "actor": name, "details": {"k": k}})
        sys.stdout.write(f"{k} {seq}\\n")
        sys.stdout.flush()
        k += 1
    rt.close()
""")


def start_writer(path: Path, name: str, durability: str = "every_event", limit: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, durability, str(limit)],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())


def read_acks(child: subprocess.Popen, at_least: int) -> list[tuple[int, int]]:
    assert child.stdout is not None
    acked = []
    while len(acked) < at_least:
        line = child.stdout.readline()
        assert line, "the writer stopped early"
        k, seq = line.split()
        acked.append((int(k), int(seq)))
    return acked


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_of_one_writer_loses_nothing_acknowledged(tmp_path: Path, round_: int) -> None:
    p = tmp_path / "audit.log"
    victim = start_writer(p, "victim")
    others = [start_writer(p, f"w{i}", limit=300) for i in range(2)]
    try:
        acked = read_acks(victim, random.randint(20, 200))
        time.sleep(random.random() * 0.02)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.stdout is not None
        acked += [(int(k), int(s)) for k, s in (ln.split() for ln in victim.stdout.read().splitlines())]
        other_acks = []
        for o in others:
            assert o.stdout is not None
            other_acks.append([(int(k), int(s)) for k, s in (ln.split() for ln in o.stdout.read().splitlines())])
            assert o.wait(60) == 0
    finally:
        for c in [victim, *others]:
            c.kill()
            c.wait()
    assert victim.returncode == -signal.SIGKILL
    r = audit_verify([p])
    assert r.intact, r.problem
    assert r.torn_tail is None  # the survivors wrote after the kill: any torn tail was cut
    seq_of = {(rec["actor"], rec["details"]["k"]): rec["seq"] for rec in records(p) if rec["type"] == "session"}
    for k, seq in acked:
        assert seq_of[("victim", k)] == seq
    for i, acks in enumerate(other_acks):
        assert len(acks) == 300
        for k, seq in acks:
            assert seq_of[(f"w{i}", k)] == seq
    # The next runtime continues the same chain.
    with bitsec.Runtime(shared_cfg(p)) as rt:
        seq = rt.audit_emit({"type": "session"})
    assert seq == r.last_seq + 2
    assert audit_verify([p]).intact


def test_sigkill_in_batched_mode_loses_at_most_the_documented_bound(tmp_path: Path) -> None:
    # docs/audit.md: a process killed with SIGKILL under batched (or none) loses at most the
    # events still in its memory: its queue and the batch being written, 2 x queue_capacity.
    p = tmp_path / "audit.log"
    capacity = 256
    lost_counts = []
    for _ in range(3):
        child = start_writer(p, "batched", durability="batched")
        try:
            acked = read_acks(child, random.randint(500, 3000))
            os.kill(child.pid, signal.SIGKILL)
            assert child.stdout is not None
            acked += [(int(k), int(s)) for k, s in (ln.split() for ln in child.stdout.read().splitlines())]
        finally:
            child.kill()
            child.wait()
        # Opening again recovers: it cuts the torn record the kill may have left (killed
        # between two writes of a batch), which is no record; what is left is then read.
        with bitsec.Runtime(shared_cfg(p, durability="batched")):
            pass
        assert audit_verify([p]).intact
        on_disk = {rec["details"]["k"] for rec in records(p) if rec["type"] == "session"}
        lost = [k for k, _ in acked if k not in on_disk]
        # What was lost is the newest events only (the file holds a prefix of the stream).
        assert all(k > max(on_disk, default=-1) for k in lost)
        assert len(lost) <= 2 * capacity
        lost_counts.append(len(lost))
        p.rename(tmp_path / f"round-{len(lost_counts)}.log")
        (tmp_path / "audit.log.shm").unlink()
    print("batched SIGKILL: events lost per kill", lost_counts)


def test_fork_after_open_child_writes_the_chain_and_uses_its_own_redis_connections(tmp_path: Path, redis_config: dict) -> None:
    p = tmp_path / "audit.log"
    cfg = {**redis_config, **shared_cfg(p), "rate_limits": {"categories": {"default": {"capacity": 3, "period_seconds": 3600}}}}
    tag = f"fork-{os.getpid()}-{time.monotonic_ns()}"
    rt = bitsec.Runtime(cfg)
    try:
        # The parent has a Redis connection in its pool and a running audit writer.
        assert rt.rate_limit_take(f"{tag}-warm", "default").allowed
        rt.audit_emit({"type": "application", "subtype": "parent_before_fork"})
        pid = os.fork()
        if pid == 0:
            exit_status = 1
            try:
                for n in range(150):
                    ds = [rt.rate_limit_take(f"{tag}-child-{n}", "default") for _ in range(4)]
                    assert [d.allowed for d in ds] == [True, True, True, False]
                    assert [d.remaining for d in ds[:3]] == [2, 1, 0]
                seq = rt.audit_emit({"type": "application", "subtype": "child_after_fork", "details": {"pid": os.getpid()}})
                assert seq and seq > 0
                rt.close()
                exit_status = 0
            finally:
                os._exit(exit_status)
        # Meanwhile the parent uses its connections: no reply may cross over.
        for n in range(150):
            ds = [rt.rate_limit_take(f"{tag}-parent-{n}", "default") for _ in range(4)]
            assert [d.allowed for d in ds] == [True, True, True, False]
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The keys the child used are in Redis: its operations went to the server.
        assert not rt.rate_limit_take(f"{tag}-child-7", "default").allowed
        after = rt.audit_emit({"type": "application", "subtype": "parent_after_fork"})
    finally:
        rt.close()
    r = audit_verify([p])
    assert r.intact, r.problem
    recs = records(p)
    child = [x for x in recs if x.get("subtype") == "child_after_fork"]
    assert len(child) == 1 and child[0]["details"]["pid"] == pid
    started = [x for x in recs if x.get("subtype") == "started"]
    assert [x["details"]["pid"] for x in started] == [os.getpid(), pid]
    assert started[1]["details"]["forked_from"] == os.getpid()
    assert [x["seq"] for x in recs if x.get("subtype") == "parent_after_fork"] == [after]


def test_fork_after_open_without_a_shared_file_fails_in_the_child_naming_the_remedy(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    rt = bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(p)}]}})
    try:
        rt.audit_emit({"type": "application", "subtype": "parent"})
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            msg = "no error"
            try:
                rt.audit_emit({"type": "application", "subtype": "child"})
            except UnsupportedError as e:
                msg = "unsupported: " + str(e)
            except BaseException as e:  # noqa: BLE001 (reported to the parent)
                msg = f"{type(e).__name__}: {e}"
            try:  # the refused event is counted, never silently gone
                counted = re.search(r"^bitsec_audit_events_dropped_total (\d+)$", rt.metrics_text(), re.M)
                msg += f"|dropped={counted.group(1) if counted else 'absent'}"
            except BaseException as e:  # noqa: BLE001 (reported to the parent)
                msg += f"|metrics: {type(e).__name__}: {e}"
            os.write(wr, msg.encode())
            os._exit(0)
        os.close(wr)
        os.waitpid(pid, 0)
        with os.fdopen(rd) as f:
            msg = f.read()
        assert msg.startswith("unsupported: ") and '"shared": true' in msg and "after fork()" in msg, msg
        assert msg.endswith("|dropped=1"), msg
        rt.audit_emit({"type": "application", "subtype": "parent_again"})
    finally:
        rt.close()
    assert audit_verify([p]).intact
    assert "child" not in [x.get("subtype") for x in records(p)]


def test_a_second_runtime_on_an_unshared_file_is_refused_naming_the_remedy(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(p)}]}}):
        with pytest.raises(ConfigError, match='"shared": true'):
            bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(p)}]}})
        with pytest.raises(ConfigError, match="does not share it"):
            bitsec.Runtime(shared_cfg(p))
    with bitsec.Runtime(shared_cfg(p)), bitsec.Runtime(shared_cfg(p)):
        with pytest.raises(ConfigError, match="in use"):
            bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(p)}]}})
    assert os.stat(str(p) + ".shm").st_mode & 0o777 == 0o600


def _metric_lines(text: str) -> list[str]:
    keep = ("_events_total{", "bitsec_audit_records_written_total ", "bitsec_audit_events_rejected_total ",
            "bitsec_audit_events_dropped_total ")
    return sorted(ln for ln in text.splitlines() if ln.startswith(keep) or any(k in ln for k in keep[:1]))


def _scrape(path: str, q, go) -> None:  # a multiprocessing target
    with bitsec.Runtime(shared_cfg(Path(path), durability="none")) as rt:
        rt.audit_emit({"type": "authentication", "subtype": "failed_login", "result": "failure"})
        rt.audit_flush()
        q.put("ready")
        go.wait(60)
        q.put(rt.metrics_text())


def test_audit_counters_are_the_same_whichever_process_answers(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with bitsec.Runtime(shared_cfg(p, durability="none")) as rt:
        for _ in range(3):
            rt.audit_emit({"type": "authorization", "subtype": "permission_denied", "result": "denied"})
        with pytest.raises(bitsec.InvalidArgumentError):
            rt.audit_emit({"type": "no_such_type"})
        rt.audit_flush()
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        go = ctx.Event()
        pr = ctx.Process(target=_scrape, args=(str(p), q, go))
        pr.start()
        assert q.get(timeout=60) == "ready"
        # Both processes answer a scrape while nobody writes: the same counters.
        mine = rt.metrics_text()
        go.set()
        child_text = q.get(timeout=60)
        pr.join(60)
    assert _metric_lines(mine) == _metric_lines(child_text)
    assert 'authorization_events_total{event_subtype="permission_denied",result="denied"} 3' in mine
    assert 'authentication_events_total{event_subtype="failed_login",result="failure"} 1' in mine
    assert "bitsec_audit_events_rejected_total 1" in mine
    assert "(per process)" in mine
    # The counters agree with the trail: started x2, 3 denied, 1 rejected, 1 failed login
    # (the two stopped records were written after the scrapes).
    assert len(records(p)) == 9
    assert "bitsec_audit_records_written_total 7" in mine


def test_shared_series_table_is_bounded_under_a_flood_of_subtypes(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    n = 2500
    with bitsec.Runtime(shared_cfg(p, durability="none")) as rt:
        for k in range(n):
            rt.audit_emit('{"type":"application","subtype":"s%d"}' % k)
        rt.audit_flush()
        text = rt.metrics_text()
    series = [ln for ln in text.splitlines() if ln.startswith("application_events_total{")]
    other = [ln for ln in series if 'event_subtype="_other"' in ln]
    assert len(other) == 1
    assert len(series) - 1 < 2048  # the audit/started series holds one of the 2048 slots
    assert sum(int(ln.rsplit(" ", 1)[1]) for ln in series) == n


APP = textwrap.dedent("""
    import os, bitsec
    from fastapi import FastAPI

    # Opened at import time: gunicorn --preload imports this once, in the master, then forks.
    rt = bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": os.environ["AUDIT_PATH"], "shared": True}],
                                   "durability": "every_event"}})
    app = FastAPI()

    @app.get("/hit/{n}")
    def hit(n: int) -> dict:
        seq = rt.audit_emit({"type": "data_access", "subtype": "read", "result": "success",
                             "details": {"n": n, "pid": os.getpid()}})
        return {"pid": os.getpid(), "seq": seq}
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_preload_workers_write_one_verifying_trail(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    audit = tmp_path / "audit.log"
    port = free_port()
    env = {**os.environ, "AUDIT_PATH": str(audit)}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "--preload", "-w", "3", "-k", "uvicorn_worker.UvicornWorker",
                             "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "app:app"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    answers: dict[int, tuple[int, int]] = {}
    try:
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hit/{n}", timeout=5) as resp:
                    body = json.loads(resp.read())
            except OSError:
                time.sleep(0.1)
                continue
            answers[n] = (body["pid"], body["seq"])
            n += 1
            if n >= 60 and len({pid for pid, _ in answers.values()}) == 3:
                break
        assert len({pid for pid, _ in answers.values()}) == 3, "requests did not reach all three workers"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            proc.kill()
            proc.wait()
    r = audit_verify([audit])
    assert r.intact, r.problem
    # The operator's command says the same.
    cli = subprocess.run([sys.executable, "-m", "bitsec", "audit", "verify", "--json", str(audit)],
                         capture_output=True, text=True, env=os.environ.copy())
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert json.loads(cli.stdout)["records"] == r.records
    got = {rec["details"]["n"]: (rec["details"]["pid"], rec["seq"]) for rec in records(audit) if rec["type"] == "data_access"}
    assert got == answers
    starts = [rec["details"] for rec in records(audit) if rec.get("subtype") == "started"]
    assert len(starts) == 3 and all("forked_from" in d for d in starts)


def test_a_writer_that_dies_holding_the_lock_leaves_a_tail_the_next_writer_cuts(tmp_path: Path) -> None:
    # A process takes the sidecar's robust mutex (offset 64, as bitsec's writer does), writes
    # half a record past the committed length and dies holding the mutex. The next writer
    # gets EOWNERDEAD, cuts the unacknowledged tail, records the cut, and the chain verifies.
    import ctypes
    import mmap

    p = tmp_path / "audit.log"
    with bitsec.Runtime(shared_cfg(p)) as rt:
        rt.audit_emit({"type": "application", "subtype": "before"})
        committed = p.stat().st_size
        pid = os.fork()
        if pid == 0:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(str(p) + ".shm", "r+b") as f:
                    m = mmap.mmap(f.fileno(), 0)
                    addr = ctypes.addressof(ctypes.c_char.from_buffer(m, 64))
                    assert libc.pthread_mutex_lock(ctypes.c_void_p(addr)) == 0
                    with open(p, "ab") as log:
                        log.write(b'{"seq":99,"id":"torn-by-a-dying-wri')
            finally:
                os._exit(0)  # dies holding the mutex
        os.waitpid(pid, 0)
        assert p.stat().st_size > committed
        seq = rt.audit_emit({"type": "application", "subtype": "after"})
    r = audit_verify([p])
    assert r.intact, r.problem
    assert r.torn_tail is None
    recs = records(p)
    assert [x["seq"] for x in recs if x.get("subtype") == "after"] == [seq]
    cut = [x for x in recs if x.get("subtype") == "torn_tail_truncated"]
    assert len(cut) == 1 and cut[0]["details"]["bytes"] == len(b'{"seq":99,"id":"torn-by-a-dying-wri')
