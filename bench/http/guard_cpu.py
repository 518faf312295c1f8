"""The guard's cost per request in CPU time of the event loop's thread, in process.

Run: ``.venv/bin/python bench/http/guard_cpu.py`` (``BITSEC_LIBRARY`` as for the other
benchmarks; ``GUARD_CPU_ROUNDS``, default 10). Takes about a minute.

Drives the HTTP benchmark's bare app and its guard app (``guard_steps.py``'s apps and
requests: HS256, every layer, 64 tokens, eight requests per event-loop turn) in process under
uvloop, in alternating rounds of 4,000 requests, and reads ``time.thread_time()`` around each
round: the CPU time of the thread that bounds a worker's throughput, without HTTP parsing,
sockets or the load generator, and without the audit writer's thread (on another core).
Prints the medians and their ratio. Time moves with the machine (a shared machine's load,
a CPU that changes between sessions): compare ratios of one run, never absolute numbers of
two. ``guard_instructions.py`` counts instructions instead, which do not move.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_apps  # noqa: E402
import guard_steps as g  # noqa: E402

ROUNDS = int(os.environ.get("GUARD_CPU_ROUNDS", "10"))
PER_ROUND = 4000


def main() -> None:
    import uvloop

    keys = bench_apps.make_keys("HS256")
    tokens = [bench_apps.make_token(keys, f"user-{i:03d}", ["operator"]) for i in range(g.TOKENS)]
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    times: dict[str, list[float]] = {"bare": [], "guard": []}
    with tempfile.TemporaryDirectory() as tmp:
        apps: dict[str, tuple[Any, dict[str, Any], Any, Any]] = {}
        for stack in times:
            app = g.build(stack, keys, tmp)
            state, inbox, task = loop.run_until_complete(g.lifespan(app))
            loop.run_until_complete(g.drive(app, state, tokens, 2000))  # warm-up
            apps[stack] = (app, state, inbox, task)
        for _ in range(ROUNDS):
            for stack, (app, state, _, _) in apps.items():
                t = time.thread_time()
                loop.run_until_complete(g.drive(app, state, tokens, PER_ROUND))
                times[stack].append((time.thread_time() - t) / PER_ROUND * 1e6)
        for app, state, inbox, task in apps.values():
            loop.run_until_complete(inbox.put({"type": "lifespan.shutdown"}))
            loop.run_until_complete(task)
    loop.close()
    bare, guard = statistics.median(times["bare"]), statistics.median(times["guard"])
    print(f"CPU µs per request on the event loop's thread (medians of {ROUNDS} alternating rounds of {PER_ROUND}): "
          f"bare {bare:.1f}, guard {guard:.1f}, guard - bare {guard - bare:.1f}; bare / guard {bare / guard:.3f}")


if __name__ == "__main__":
    main()
