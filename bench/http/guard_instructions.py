"""The guard's cost per request in machine instructions (callgrind), not time.

Run: ``.venv/bin/python bench/http/guard_instructions.py`` (``BITSEC_LIBRARY`` as for the
other benchmarks; needs ``valgrind``: ``apt-get install valgrind``). Takes about a minute.

Drives the HTTP benchmark's bare app and its guard app (``guard_steps.py``'s apps and
requests: HS256, every layer, 64 tokens, eight requests per event-loop turn, uvloop) in
process, under ``valgrind --tool=callgrind``, once with N and once with 6N requests after the
same warm-up; the difference divided by 5N is one request's instructions (start-up and
shutdown cancel out). Counted: the event loop's thread, which bounds a worker's throughput.
(Not the audit writer's thread: valgrind runs one thread at a time, so the writer's batches,
waits and wake-ups there are not what they are on two cores; ``perf`` shows its share.) On a shared machine whose speed moves between runs, and which changes CPU between
sessions, these counts stay put: a change of 1 % shows. They do not weigh instructions (a
cache miss costs as much as many), so the time ratio (``http_bench.py``) is lower than the
instruction ratio this prints.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = int(os.environ.get("GUARD_INSTRUCTIONS_N", "200"))
WARM = 1000


def child(stack: str, n: int) -> None:
    sys.path.insert(0, str(HERE))
    import bench_apps
    import guard_steps as g
    import uvloop

    keys = bench_apps.make_keys("HS256")
    tokens = [bench_apps.make_token(keys, f"user-{i:03d}", ["operator"]) for i in range(g.TOKENS)]
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory() as tmp:
        app = g.build(stack, keys, tmp)
        state, inbox, task = loop.run_until_complete(g.lifespan(app))
        loop.run_until_complete(g.drive(app, state, tokens, WARM))
        loop.run_until_complete(g.drive(app, state, tokens, n))
        loop.run_until_complete(inbox.put({"type": "lifespan.shutdown"}))
        loop.run_until_complete(task)


def main_thread(prefix: str) -> int:
    """The main thread's instructions, from callgrind's file of thread 1."""
    for line in Path(prefix + "-01").read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no total in {prefix}-01")


def measure(stack: str, n: int, out: str) -> int:
    prefix = f"{out}/{stack}-{n}"
    subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={prefix}",
                    sys.executable, __file__, "--child", stack, str(n)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return main_thread(prefix)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as out:
        for stack in ("bare", "guard"):
            per[stack] = (measure(stack, 6 * N, out) - measure(stack, N, out)) / (5 * N)
    bm, gm = per["bare"], per["guard"]
    print(f"instructions per request on the event loop's thread ({5 * N} requests, callgrind; HS256, "
          f"every layer): bare {bm:,.0f}, guard {gm:,.0f}, guard - bare {gm - bm:,.0f}; bare / guard {bm / gm:.3f}")


if __name__ == "__main__":
    main()
