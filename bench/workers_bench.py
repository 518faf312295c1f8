"""The reference service with 1 and 2 worker processes on the host store, in one run: requests
per second and server CPU per request of one protected endpoint (bearer token, permission,
rate limit, audit record), driven by wrk over keep-alive connections.

CPU per request is the CPU time (user + system, from /proc) of the master and every worker
during the load, divided by the requests served. The goal: CPU per request with 2 workers
within 1.1x of 1 worker (sharing the host store and one audit trail costs little per request).
Prints a markdown table. Needs wrk (`make bench` installs it).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bindings" / "python" / "tests"))

from workers_support import WorkerService, _children  # noqa: E402

WRK = shutil.which("wrk")
DURATION = int(os.environ.get("WORKERS_BENCH_SECONDS", "8"))
CONNECTIONS = 16
TICKS = os.sysconf("SC_CLK_TCK")


def configure(cfg: dict[str, Any]) -> None:
    # a limit the load never reaches: the endpoint's full path is measured, not 429s
    cfg["rate_limits"]["categories"]["default"]["capacity"] = 100_000_000


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def run(workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bitsec-workers-bench-") as d:
        svc = WorkerService(Path(d), "gunicorn", workers=workers, configure=configure)
        try:
            token = svc.token("ada")
            script = Path(d) / "load.lua"
            script.write_text('wrk.headers["Authorization"] = "Bearer ' + token + '"\n')
            pids = [svc.master, *_children(svc.master)]
            cpu0 = cpu_seconds(pids)
            out = subprocess.run([WRK, "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", "-s", str(script),
                                  f"{svc.url}/api/v1/equipment"], capture_output=True, text=True,
                                 timeout=DURATION + 60).stdout
            cpu = cpu_seconds(pids) - cpu0
        finally:
            svc.stop(check=False)
    total = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (total and rps) or "Non-2xx" in out:
        raise SystemExit(f"wrk's output shows failures or cannot be read:\n{out}")
    n = int(total.group(1))
    return {"rps": float(rps.group(1)), "cpu_us": cpu / n * 1e6, "n": n}


def main() -> None:
    if WRK is None:
        raise SystemExit("wrk is not installed (make bench installs it)")
    load = os.getloadavg()
    rows = {w: run(w) for w in (1, 2)}
    print("## workers (reference service, host store)\n")
    print(f"GET /api/v1/equipment with a bearer token (permission, rate limit, audit record), gunicorn with uvicorn workers (--preload), "
          f"wrk {CONNECTIONS} connections for {DURATION} s per run; load average before "
          f"{load[0]:.2f}; {os.cpu_count()} cores\n")
    print("| workers | requests/s | server CPU per request (µs) | CPU vs 1 worker |\n|---|---|---|---|")
    for w, r in rows.items():
        print(f"| {w} | {r['rps']:.0f} | {r['cpu_us']:.0f} | {r['cpu_us'] / rows[1]['cpu_us']:.2f}x |")


if __name__ == "__main__":
    main()
