"""A failing fdatasync under the audit file (docs/faults.md).

RLIMIT_FSIZE (test_faults_audit_disk.py) makes writes fail; it cannot make a sync fail. Here
the child process runs with an LD_PRELOAD shim, built from C at test time, whose fdatasync
returns EIO while a flag file exists: a dying disk, or a thin-provisioned one out of space.

After a failed fdatasync Linux may have dropped the dirty pages and a later sync succeeds
without them, so bitsec fails stop (docs/audit.md): durable emits and flushes raise
BitsecIOError until the runtime is reopened, even when the disk works again, and the durable
sequence number stops where the last good sync left it. Reopening recovers: the file sink
reads back and checks its tail, and writing resumes on the same chain.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from bitsec import audit_verify

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
int fdatasync(int fd) {
    static int (*real)(int);
    const char *flag = getenv("BITSEC_TEST_FAIL_SYNC_FLAG");
    if (flag && access(flag, F_OK) == 0) { errno = EIO; return -1; }
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real ? real(fd) : -1;
}
"""

CHILD = textwrap.dedent(r"""
    import json, os, sys
    import bitsec

    path, flag, durability = sys.argv[1], sys.argv[2], sys.argv[3]
    cfg = {"audit": {"sinks": [{"type": "file", "path": path}], "durability": durability,
                     "durable_timeout_ms": 3000}}
    out = {}

    def metric(text, name):
        return next(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " "))

    def emit(rt, actor):
        try:
            return ["ok", rt.audit_emit({"type": "application", "subtype": "t", "actor": actor})]
        except bitsec.BitsecError as e:
            return [type(e).__name__, None]

    def flush(rt):
        try:
            rt.audit_flush()
            return "ok"
        except bitsec.BitsecError as e:
            return type(e).__name__

    rt = bitsec.Runtime(cfg)
    out["before"] = [emit(rt, "before-%d" % i) for i in range(5)]
    out["before_flush"] = flush(rt)
    out["durable_before"] = metric(rt.metrics_text(), "bitsec_audit_durable_sequence")
    open(flag, "w").close()                                  # the disk starts failing syncs
    out["failing"] = [emit(rt, "failing-%d" % i) for i in range(3)]
    out["failing_flush"] = flush(rt)
    os.unlink(flag)                                          # the disk works again
    out["after"] = [emit(rt, "after-%d" % i) for i in range(3)]
    out["after_flush"] = flush(rt)
    st = rt.audit_stats()
    text = rt.metrics_text()
    out["file_failure"] = st["file_failure"]
    out["sink_failing"] = metric(text, "bitsec_audit_sink_failing")
    out["errors"] = metric(text, 'bitsec_audit_sink_errors_total{sink="file"}')
    out["durable_after"] = metric(text, "bitsec_audit_durable_sequence")
    rt.close()

    rt = bitsec.Runtime(cfg)                                 # reopen: recovery, then writing resumes
    out["reopened"] = [emit(rt, "reopened-%d" % i) for i in range(3)]
    out["reopened_flush"] = flush(rt)
    out["reopened_failing"] = metric(rt.metrics_text(), "bitsec_audit_sink_failing")
    rt.close()
    print(json.dumps(out))
""")


def build_shim(tmp_path: Path) -> Path:
    src = tmp_path / "failsync.c"
    src.write_text(SHIM)
    so = tmp_path / "failsync.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (make test installs build tools with the toolchain)"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(src), "-ldl"], check=True)
    return so


def run(tmp_path: Path, durability: str) -> tuple[dict, Path]:
    so = build_shim(tmp_path)
    path = tmp_path / "audit.log"
    flag = tmp_path / "fail-sync"
    env = dict(__import__("os").environ, LD_PRELOAD=str(so), BITSEC_TEST_FAIL_SYNC_FLAG=str(flag))
    res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(flag), durability],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), path


def check_common(out: dict, path: Path) -> None:
    assert all(k == "ok" and s for k, s in out["before"])
    assert out["before_flush"] == "ok"
    assert out["failing_flush"] == "BitsecIOError"
    # Fail stop: the disk works again, but what the failed sync covered cannot be vouched for.
    assert out["after_flush"] == "BitsecIOError"
    assert "fdatasync failed" in out["file_failure"] and "reopen the runtime" in out["file_failure"]
    assert out["sink_failing"] == 1
    assert out["errors"] >= 1
    assert out["durable_after"] == out["durable_before"], "durable sequence moved past a failed sync"
    # Reopened: recovery checked the tail, writing and syncing resume on the same chain.
    assert all(k == "ok" and s for k, s in out["reopened"])
    assert out["reopened_flush"] == "ok"
    assert out["reopened_failing"] == 0
    report = audit_verify([path])
    assert report.intact, report.problem
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    actors = [r.get("actor") for r in recs if r["type"] == "application"]
    # The shim fails the sync only, the kernel kept the pages: every event reached the file.
    assert [a for a in actors if a.startswith("before-")] == [f"before-{i}" for i in range(5)]
    assert [a for a in actors if a.startswith("reopened-")] == [f"reopened-{i}" for i in range(3)]
    assert len(actors) == len(set(actors))


def test_failed_fdatasync_every_event_fails_stop_until_reopen(tmp_path: Path) -> None:
    out, path = run(tmp_path, "every_event")
    # The first emit after the failure sees it; none is acknowledged as durable meanwhile.
    assert [k for k, _ in out["failing"]] == ["BitsecIOError"] * 3
    assert [k for k, _ in out["after"]] == ["BitsecIOError"] * 3
    check_common(out, path)


def test_failed_fdatasync_batched_keeps_acknowledging_but_flush_fails(tmp_path: Path) -> None:
    out, path = run(tmp_path, "batched")
    # batched emits never wait for the disk; the flush is where durability is asked for.
    assert all(k == "ok" and s for k, s in out["failing"] + out["after"])
    check_common(out, path)
