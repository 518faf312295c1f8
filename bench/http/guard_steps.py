"""The guard's own Python work per request, counted (not timed): bytecode instructions.

Run: ``.venv/bin/python bench/http/guard_steps.py`` (``BITSEC_LIBRARY`` as for the other
benchmarks). Builds the HTTP benchmark's bare app and its guard app (bench_apps.py, HS256,
every layer), drives each in-process through its ASGI callable with the benchmark's GET
(64 tokens, 1,000 resource ids, eight requests per event-loop turn), and counts the bytecode
instructions the interpreter executes per request (``sys.settrace`` opcode events, after a
warm-up). The count does not move with the machine's load, so it shows a change of a few
percent that a wrk run on a shared machine cannot (BENCHMARKS.md, HTTP). Prints both totals,
the difference, and the guard's functions (``bitsec`` code only) with their share.
"""
from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_apps  # noqa: E402

TOKENS, IDS, PER_TURN, WARM, COUNTED = 64, 1000, 8, 512, 512


def build(stack: str, keys: dict[str, Any], tmp: str) -> Any:
    return bench_apps.build_app({"stack": stack, "layers": [] if stack == "bare" else list(bench_apps.LAYERS),
                                 "alg": "HS256", "secret": keys["secret"], "public_pem": None,
                                 "audit_path": f"{tmp}/{stack}.log", "offload": ""})


async def lifespan(app: Any) -> tuple[dict[str, Any], asyncio.Queue[Any], asyncio.Future[Any]]:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    state: dict[str, Any] = {}
    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state},
                                     inbox.get, outbox.put))
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"startup failed: {started}")
    return state, inbox, task


async def drive(app: Any, state: dict[str, Any], tokens: list[str], n: int) -> None:
    headers = [[(b"host", b"127.0.0.1:8000"), (b"authorization", b"Bearer " + t.encode())] for t in tokens]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one(i: int) -> None:
        path = f"/api/v1/equipment/{i % IDS}"
        await app({"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                   "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 40000 + i % 32), "scheme": "http",
                   "root_path": "", "headers": headers[i % len(headers)], "state": dict(state), "method": "GET",
                   "path": path, "raw_path": path.encode(), "query_string": b""}, receive, send)

    for k in range(0, n, PER_TURN):
        await asyncio.gather(*(one(k + j) for j in range(PER_TURN)))
    if statuses.count(200) != n:
        raise SystemExit(f"expected {n} answers 200, got {collections.Counter(statuses)}")


def counted(app: Any, state: dict[str, Any], tokens: list[str]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        key = code.co_filename.rsplit("site-packages/", 1)[-1].rsplit("/src/", 1)[-1] + ":" + code.co_qualname

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local
        return local

    async def run() -> None:
        sys.settrace(tracer)
        try:
            await drive(app, state, tokens, COUNTED)
        finally:
            sys.settrace(None)

    asyncio.get_event_loop().run_until_complete(run())
    return counts


def main() -> None:
    keys = bench_apps.make_keys("HS256")
    tokens = [bench_apps.make_token(keys, f"user-{i:03d}", ["operator"]) for i in range(TOKENS)]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    totals: dict[str, float] = {}
    guard_counts: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for stack in ("bare", "guard"):
            app = build(stack, keys, tmp)
            state, inbox, task = loop.run_until_complete(lifespan(app))
            loop.run_until_complete(drive(app, state, tokens, WARM))
            counts = counted(app, state, tokens)
            totals[stack] = sum(counts.values()) / COUNTED
            if stack == "guard":
                guard_counts = counts
            loop.run_until_complete(inbox.put({"type": "lifespan.shutdown"}))
            loop.run_until_complete(task)
    loop.close()
    print(f"bytecode instructions per request: bare {totals['bare']:.0f}, guard {totals['guard']:.0f}, "
          f"guard - bare {totals['guard'] - totals['bare']:.0f}\n")
    print("| the guard's function (bitsec) | per request |\n|---|---:|")
    for name, n in guard_counts.most_common():
        if name.startswith("bitsec/"):
            print(f"| `{name.removeprefix('bitsec/')}` | {n / COUNTED:.0f} |")


if __name__ == "__main__":
    main()
