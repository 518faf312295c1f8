"""HTTP: a protected FastAPI endpoint (bearer token + RBAC permission + per-user rate limit +
an audit record per request) secured by bitsec.fastapi vs the same endpoint on PyJWT + casbin
+ slowapi + Python logging, same policy, each served by uvicorn (one worker) on 127.0.0.1 and
loaded by wrk (required: the benchmark exits with an error when it is not installed). Prints
markdown tables and writes build/bench/http.json.

Every app is checked before it is measured (200 for a valid operator token, 401 for a
tampered, an expired and a missing token, 403 for a viewer's write, X-RateLimit headers that
count down) and after (no non-2xx answer and no socket error under load, one audit record
per request in its file), so a broken app cannot post a good number.

Where the time goes: the bare endpoint (no security) bounds what any stack can reach; each
stack is then measured with its controls added one at a time, and the per-call cost of each
control is measured in process (``--no-micro`` skips that).

Environment: HTTP_BENCH_DURATION (s per run, 5), HTTP_BENCH_RUNS (3), HTTP_BENCH_CONNECTIONS
(32), HTTP_BENCH_WARMUP (s, 2), HTTP_BENCH_LOADGEN (wrk, the default; ``python`` only when asked
for explicitly, for a machine without wrk: its numbers are not comparable), HTTP_BENCH_QUICK=1
(only the bare endpoint and the full stacks, HS256 and RS256), HTTP_BENCH_JSON (the JSON
output, default build/bench/http.json).
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
APPS_DIR = ROOT / "bench" / "http"
sys.path.insert(0, str(APPS_DIR))
import bench_apps  # noqa: E402  (bench/http/bench_apps.py)

DURATION = float(os.environ.get("HTTP_BENCH_DURATION", "5"))
RUNS = int(os.environ.get("HTTP_BENCH_RUNS", "3"))
CONNECTIONS = int(os.environ.get("HTTP_BENCH_CONNECTIONS", "32"))
WARMUP = float(os.environ.get("HTTP_BENCH_WARMUP", "2"))
QUICK = os.environ.get("HTTP_BENCH_QUICK") == "1"
USERS = 64  # operator tokens the load rotates through (one bucket per user)
PATH = "/api/v1/equipment/{}"


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


LOOP = "uvloop" if _have("uvloop") else "asyncio"
HTTP_IMPL = "httptools" if _have("httptools") else "h11"
WRK = shutil.which("wrk")
LOADGEN = os.environ.get("HTTP_BENCH_LOADGEN") or "wrk"
JSON_OUT = Path(os.environ.get("HTTP_BENCH_JSON") or ROOT / "build" / "bench" / "http.json")


@dataclass
class Config:
    label: str
    stack: str
    layers: list[str]
    alg: str = "HS256"
    offload: str = ""  # bitsec.fastapi's offload= ("" = its default, auto)


@dataclass
class Server:
    config: Config
    keys: dict[str, Any]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    audit_path: Path = Path()
    sent: int = 0  # responses the load generator and the checks received
    results: list[dict[str, float]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(server: Server) -> None:
    c = server.config
    server.audit_path = server.workdir / "audit.log"
    settings = {"stack": c.stack, "layers": c.layers, "alg": c.alg, "secret": server.keys["secret"],
                "public_pem": server.keys["public_pem"], "audit_path": str(server.audit_path), "offload": c.offload}
    settings_path = server.workdir / "settings.json"
    settings_path.write_text(json.dumps(settings))
    server.port = free_port()
    env = dict(os.environ, HTTPBENCH_SETTINGS=str(settings_path))
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "bench_apps:create_app", "--app-dir", str(APPS_DIR),
           "--host", "127.0.0.1", "--port", str(server.port), "--no-access-log", "--log-level", "warning",
           "--loop", LOOP, "--http", HTTP_IMPL]
    log = open(server.workdir / "server.log", "wb")
    server.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=server.workdir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise SystemExit(f"{c.label}: uvicorn exited: {(server.workdir / 'server.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{c.label}: uvicorn did not start")


def stop(server: Server) -> None:
    """SIGINT (uvicorn's graceful shutdown: the lifespan flushes bitsec's audit queue), by PID."""
    p = server.proc
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of a process so far: what a request costs the
    server, less sensitive than wall time to the other work on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- checks --------------------------------------------------------------------------------

def check(server: Server) -> None:
    """The app answers as its layers say; raises SystemExit otherwise."""
    c, keys = server.config, server.keys
    url = f"http://127.0.0.1:{server.port}"
    op = bench_apps.make_token(keys, "check-operator", ["operator"])
    viewer = bench_apps.make_token(keys, "check-viewer", ["viewer"])
    expired = bench_apps.make_token(keys, "check-operator", ["operator"], exp_in=-3600)
    head, payload, sig = op.split(".")
    tampered = ".".join((head, payload, ("A" if sig[0] != "A" else "B") + sig[1:]))
    problems: list[str] = []

    def expect(resp: httpx.Response, status: int, what: str) -> httpx.Response:
        server.sent += 1
        if resp.status_code != status:
            problems.append(f"{what}: {resp.status_code} (expected {status}) {resp.text[:200]}")
        return resp

    def auth(t: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {t}"}

    with httpx.Client(base_url=url, timeout=10) as h:
        r = expect(h.get(PATH.format(1), headers=auth(op)), 200, "operator GET")
        if r.status_code == 200 and r.json().get("id") != 1:
            problems.append(f"operator GET: unexpected body {r.text[:200]}")
        if "token" in c.layers:
            expect(h.get(PATH.format(1)), 401, "no token")
            expect(h.get(PATH.format(1), headers=auth(tampered)), 401, "tampered token")
            r = expect(h.get(PATH.format(1), headers=auth(expired)), 401, "expired token")
            if "expired" not in r.text:
                problems.append(f"expired token: detail {r.text[:200]}")
        if "permission" in c.layers:
            expect(h.get(PATH.format(2), headers=auth(viewer)), 200, "viewer GET")
            expect(h.post(PATH.format(2), headers=auth(viewer), json={"status": "x"}), 403, "viewer POST")
            expect(h.post(PATH.format(2), headers=auth(op), json={"status": "x"}), 200, "operator POST")
        if "ratelimit" in c.layers:
            seen = []
            for _ in range(3):  # slowapi's fixed window may roll over between two requests: retry
                a = expect(h.get(PATH.format(3), headers=auth(op)), 200, "rate-limited GET 1")
                b = expect(h.get(PATH.format(3), headers=auth(op)), 200, "rate-limited GET 2")
                try:
                    ra, rb = int(a.headers["X-RateLimit-Remaining"]), int(b.headers["X-RateLimit-Remaining"])
                except (KeyError, ValueError):
                    seen.append(f"no X-RateLimit-Remaining header: {dict(a.headers)}")
                    break
                seen.append(f"{ra} then {rb}")
                if rb < ra < bench_apps.RATE_CAPACITY:
                    break
            else:
                problems.append("X-RateLimit-Remaining does not count down: " + ", ".join(seen))
            if seen and seen[-1].startswith("no "):
                problems.append(seen[-1])
    if problems:
        raise SystemExit(f"{c.label} ({c.alg}) failed its checks:\n  " + "\n  ".join(problems))


def audit_records(server: Server) -> int:
    """Per-request records in the app's audit file: every line of the incumbent's; bitsec's
    middleware records (they carry the request id; the library's own lifecycle and
    automatic events are not counted)."""
    if not server.audit_path.exists():
        return 0
    with open(server.audit_path, "rb") as f:
        if server.config.stack == "incumbent":
            return sum(1 for _ in f)
        return sum(1 for line in f if b'"request_id"' in line)


# ---- load generators ------------------------------------------------------------------------

def tokens_for_load(keys: dict[str, Any]) -> list[str]:
    return [bench_apps.make_token(keys, f"user-{i:03d}", ["operator"]) for i in range(USERS)]


def wrk_script(tokens: list[str], path: Path) -> Path:
    lua = ["local tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}",
           "local n = #tokens", "local i = 0",
           "request = function()",
           "  i = i + 1",
           f'  return wrk.format("GET", "/api/v1/equipment/" .. (i % 1000), '
           '{["Authorization"] = "Bearer " .. tokens[(i % n) + 1]})',
           "end"]
    path.write_text("\n".join(lua) + "\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def run_wrk(server: Server, script: Path, duration: float) -> dict[str, float]:
    assert WRK is not None
    out = subprocess.run([WRK, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency",
                          "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{server.port}"],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    if not (rps and total and "50" in lat and "99" in lat):
        raise SystemExit(f"{server.config.label}: cannot read wrk's output:\n{out}")

    def ms(v: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
        if not m:
            raise SystemExit(f"wrk latency {v!r}")
        return float(m.group(1)) * _UNITS[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    server.sent += int(total.group(1))
    if non2xx or errors:
        raise SystemExit(f"{server.config.label}: the load run had failures (see "
                         f"{server.workdir / 'server.log'}):\n{out}")
    return {"rps": float(rps.group(1)), "p50": ms(lat["50"]), "p99": ms(lat["99"]), "n": int(total.group(1))}


async def _python_load(port: int, tokens: list[str], duration: float) -> dict[str, float]:
    """Closed-loop keep-alive HTTP/1.1 clients (one per connection), as wrk does."""
    latencies: list[float] = []
    bad = 0
    stop_at = time.perf_counter() + duration

    async def client(k: int) -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < stop_at:
                i += CONNECTIONS
                req = (f"GET {PATH.format(i % 1000)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Authorization: Bearer {tokens[i % len(tokens)]}\r\n\r\n").encode()
                t0 = time.perf_counter()
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not head.startswith(b"HTTP/1.1 2"):
                    bad += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(CONNECTIONS)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    n = len(latencies)
    return {"rps": n / elapsed, "p50": latencies[n // 2] * 1e3, "p99": latencies[min(n - 1, int(n * 0.99))] * 1e3,
            "n": n, "bad": bad}


def run_python(server: Server, tokens: list[str], duration: float) -> dict[str, float]:
    r = asyncio.run(_python_load(server.port, tokens, duration))
    server.sent += int(r["n"])
    if r["bad"]:
        raise SystemExit(f"{server.config.label}: {int(r['bad'])} non-2xx answers under load")
    return r


# ---- in-process cost of each control --------------------------------------------------------

def per_call_us(fn: Any, n: int = 20000) -> float:
    fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def verify_rows(keys: dict[str, Any], workdir: Path) -> list[tuple[str, float, str, float]]:
    """Token verification alone for ``keys``' algorithm: bitsec (its cache on, as in the app,
    and off) vs PyJWT with the key loaded once."""
    import jwt

    import bitsec

    settings = {"alg": keys["alg"], "secret": keys["secret"], "public_pem": keys["public_pem"], "layers": []}
    cfg = bench_apps.bitsec_config(settings)
    rt = bitsec.Runtime(cfg)
    cfg["tokens"]["cache_size"] = 0
    rt0 = bitsec.Runtime(cfg)
    tok = bench_apps.make_token(keys, "user-001", ["operator"])
    vkey = bench_apps.incumbent_verify_key(keys)
    t_jwt = per_call_us(lambda: jwt.decode(tok, vkey, algorithms=[keys["alg"]], issuer=bench_apps.ISS,
                                           audience=bench_apps.AUD, leeway=30,
                                           options={"require": ["exp", "iat", "sub"]}), 2000)
    rows = [(f"verify token {keys['alg']} (cache hit)", per_call_us(lambda: rt.verify_token(tok)),
             f"jwt.decode {keys['alg']}", t_jwt),
            (f"verify token {keys['alg']} (no cache)", per_call_us(lambda: rt0.verify_token(tok), 2000),
             f"jwt.decode {keys['alg']}", t_jwt)]
    rt.close()
    rt0.close()
    return rows


def micro(keys: dict[str, Any], workdir: Path) -> list[tuple[str, float, str, float]]:
    """µs per call of each control as its app calls it, outside HTTP; plus the thread hop."""
    import logging

    import anyio
    import jwt
    from limits import parse
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    import bitsec

    settings = {"alg": keys["alg"], "secret": keys["secret"], "public_pem": keys["public_pem"],
                "layers": ["audit"], "audit_path": str(workdir / "micro-audit.log")}
    rt = bitsec.Runtime(bench_apps.bitsec_config(settings))
    tok = bench_apps.make_token(keys, "user-001", ["operator"])
    claims = rt.verify_token(tok)
    principal = bitsec.Principal.from_claims(claims)
    vkey = bench_apps.incumbent_verify_key(keys)
    enforcer = bench_apps.casbin_enforcer()
    limiter, item = FixedWindowRateLimiter(MemoryStorage()), parse(f"{bench_apps.RATE_CAPACITY}/minute")
    logger = logging.getLogger("micro.audit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(workdir / "micro-logging.log")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    audit = bench_apps.SecurityAuditLogger(logger)
    event = {"type": "data_access", "action": "get", "resource": "/api/v1/equipment/1", "result": "success",
             "actor": "user-001", "tenant": "t1", "ip": "127.0.0.1", "user_agent": "wrk",
             "details": {"request_id": "2f1c0e1e-8d4b-4b53-9a43-0f3c1b5e6d7a", "method": "GET",
                         "path": "/api/v1/equipment/1", "status": 200}}
    ctx = {"request_id": "2f1c0e1e-8d4b-4b53-9a43-0f3c1b5e6d7a", "method": "GET", "path": "/api/v1/equipment/1",
           "status": 200}
    rows = [
        ("verify token HS256 (cache hit, as in the app)", per_call_us(lambda: rt.verify_token(tok)),
         "jwt.decode HS256", per_call_us(lambda: jwt.decode(tok, vkey, algorithms=[keys["alg"]], issuer=bench_apps.ISS,
                                                      audience=bench_apps.AUD, leeway=30,
                                                      options={"require": ["exp", "iat", "sub"]}))),
        ("permission", per_call_us(lambda: rt.check_permission(principal, "equipment", "read")),
         "Enforcer.enforce", per_call_us(lambda: enforcer.enforce("operator", "equipment", "read"))),
        ("rate-limit take", per_call_us(lambda: rt.rate_limit_take("user:user-001", "default", 1)),
         "limits hit (slowapi's storage)", per_call_us(lambda: limiter.hit(item, "user:user-001"))),
        ("audit emit (batched)", per_call_us(lambda: rt.audit_emit(event)),
         "SecurityAuditLogger (FileHandler)",
         per_call_us(lambda: audit.log_data_access_event("user-001", "read", "equipment", "1", context=ctx))),
    ]

    async def hops(n: int) -> float:
        def noop() -> None:
            return None
        await anyio.to_thread.run_sync(noop)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                await anyio.to_thread.run_sync(noop)
            best = min(best, (time.perf_counter() - t0) / n)
        return best * 1e6

    hop = anyio.run(hops, 2000, backend_options={"use_uvloop": LOOP == "uvloop"})
    rows.append(("thread-pool hop (anyio.to_thread.run_sync of a no-op)", hop, "-", float("nan")))
    rt.close()
    handler.close()
    return rows


# ---- main ----------------------------------------------------------------------------------

BITSEC = "bitsec"
INCUMBENT = "incumbent (ADR-007's `@app.middleware(\"http\")` audit)"
INCUMBENT_ASGI = "incumbent (audit from a plain ASGI middleware)"
BARE = "bare FastAPI (no security)"
ALWAYS = "bitsec, `offload=\"always\"` (every native call through the thread pool: the behaviour before)"
GUARD = "bitsec (guard: `GuardMiddleware`)"


def configs() -> list[Config]:
    full = list(bench_apps.LAYERS)
    asgi = full[:-1] + ["audit_asgi"]
    head = [Config(BARE, "bare", []), Config(GUARD, "guard", full), Config(BITSEC, "bitsec", full),
            Config(INCUMBENT, "incumbent", full), Config(INCUMBENT_ASGI, "incumbent", asgi)]
    rs = [Config(c.label, c.stack, c.layers, "RS256") for c in head]
    if QUICK:
        return head + rs
    out = head + [Config(ALWAYS, "bitsec", full, offload="always")]
    for stack in ("bitsec", "incumbent"):
        for k in range(1, len(full)):
            out.append(Config(f"{stack}: " + " + ".join(full[:k]), stack, full[:k]))
    return out + rs


def versions() -> str:
    from importlib.metadata import version

    import bitsec
    parts = [f"Python {platform.python_version()}", f"bitsec {bitsec.library_version()}"]
    for pkg in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "PyJWT", "casbin", "slowapi", "limits"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except Exception:
            pass
    return ", ".join(parts)


def loadgen_desc() -> str:
    if LOADGEN == "wrk":
        ver = subprocess.run([WRK or "wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0]
        return f"{ver}, 1 thread, {CONNECTIONS} connections"
    return f"the Python asyncio client (HTTP_BENCH_LOADGEN=python), {CONNECTIONS} connections"


def cpu_ratio(bitsec_us: float, incumbent_us: float) -> str:
    if bitsec_us <= incumbent_us:
        return f"{incumbent_us / bitsec_us:.2f}× less"
    return f"{bitsec_us / incumbent_us:.2f}× more"


def write_json(servers: list[Server], load0: float, load1: float, med: Any) -> None:
    """build/bench/http.json: per app and algorithm the medians (req/s, p50/p99 ms, server CPU
    µs per request) and every run, the load average before and after, the load generator."""
    apps = []
    for s in servers:
        apps.append({"app": s.config.label, "stack": s.config.stack, "layers": s.config.layers, "alg": s.config.alg,
                     "offload": s.config.offload or "auto", "rps": med(s, "rps"), "p50_ms": med(s, "p50"),
                     "p99_ms": med(s, "p99"), "cpu_us_per_request": med(s, "cpu"), "runs": s.results})
    doc = {"benchmark": "http", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load_generator": loadgen_desc(), "connections": CONNECTIONS, "duration_s": DURATION, "runs": RUNS,
           "warmup_s": WARMUP, "load_average": {"before": load0, "after": load1}, "cpus": os.cpu_count(),
           "versions": versions(), "loop": LOOP, "http": HTTP_IMPL, "apps": apps}
    JSON_OUT.parent.mkdir(parents=True, exist_ok=True)
    JSON_OUT.write_text(json.dumps(doc, indent=1) + "\n")


def main() -> None:
    if LOADGEN == "wrk" and not WRK:
        raise SystemExit("http_bench: wrk is not installed (apt-get install wrk); the benchmark needs it "
                         "(HTTP_BENCH_LOADGEN=python runs the Python load generator instead, on request only)")
    if LOADGEN not in ("wrk", "python"):
        raise SystemExit("HTTP_BENCH_LOADGEN must be wrk or python")
    cfgs = configs()
    work = Path(tempfile.mkdtemp(prefix="httpbench-"))
    keys = {alg: bench_apps.make_keys(alg) for alg in sorted({c.alg for c in cfgs})}
    servers = []
    for i, c in enumerate(cfgs):
        d = work / f"s{i}"
        d.mkdir()
        servers.append(Server(c, keys[c.alg], d))
    scripts = {alg: wrk_script(tokens_for_load(k), work / f"load-{alg}.lua") for alg, k in keys.items()}
    tokens = {alg: tokens_for_load(k) for alg, k in keys.items()}
    load0 = os.getloadavg()[0]
    try:
        for s in servers:
            start(s)
            check(s)

        def run(s: Server, duration: float) -> dict[str, float]:
            assert s.proc is not None
            c0 = cpu_seconds(s.proc.pid)
            if LOADGEN == "wrk":
                r = run_wrk(s, scripts[s.config.alg], duration)
            else:
                r = run_python(s, tokens[s.config.alg], duration)
            r["cpu"] = (cpu_seconds(s.proc.pid) - c0) / r["n"] * 1e6
            return r

        for s in servers:
            run(s, WARMUP)
        for _ in range(RUNS):  # rounds: every app once per round, so they share the machine's noise
            for s in servers:
                s.results.append(run(s, DURATION))
    finally:
        for s in servers:
            stop(s)
    load1 = os.getloadavg()[0]
    for s in servers:
        if any(l.startswith("audit") for l in s.config.layers):
            n = audit_records(s)
            if n < s.sent:
                raise SystemExit(f"{s.config.label} ({s.config.alg}): {n} audit records for {s.sent} responses")

    def med(s: Server, k: str) -> float:
        return statistics.median(r[k] for r in s.results)

    by = {(s.config.label, s.config.alg): s for s in servers}
    print("## HTTP (Python, FastAPI): bitsec.fastapi vs PyJWT + casbin + slowapi + logging")
    print()
    print(f"{versions()}. uvicorn, one worker, `--no-access-log`, loop {LOOP}, http {HTTP_IMPL}; load: "
          f"{loadgen_desc()}, GET of a protected endpoint rotating {USERS} operator tokens, warm-up {WARMUP:g} s, "
          f"then {RUNS} rounds of {DURATION:g} s alternating the apps; medians. Load average "
          f"{load0:.1f} before, {load1:.1f} after. Every app passed its checks (200/401/403, rate-limit headers) "
          "and, under load, answered only 2xx and wrote one audit record per request.")
    print()
    def row(name: str, s: Server, prev: float | None = None) -> float:
        us = med(s, "cpu")
        plus = "" if prev is None else f"{us - prev:+.0f}"
        print(f"| {name} | {med(s, 'rps'):.0f} | {us:.0f} | {plus} | {med(s, 'p50'):.2f} | {med(s, 'p99'):.2f} |")
        return us

    print("| stack | token | req/s | p50 ms | p99 ms | server CPU µs/request |")
    print("|---|---|---:|---:|---:|---:|")
    write_json(servers, load0, load1, med)
    for alg in sorted(keys):
        for label in (BARE, GUARD, BITSEC, INCUMBENT, INCUMBENT_ASGI):
            if (label, alg) not in by:
                continue
            s = by[(label, alg)]
            print(f"| {label} | {alg} | {med(s, 'rps'):.0f} | {med(s, 'p50'):.2f} | {med(s, 'p99'):.2f} | "
                  f"{med(s, 'cpu'):.0f} |")
        if (ALWAYS, alg) in by:
            a = by[(ALWAYS, alg)]
            print(f"| {ALWAYS} | {alg} | {med(a, 'rps'):.0f} | {med(a, 'p50'):.2f} | {med(a, 'p99'):.2f} | "
                  f"{med(a, 'cpu'):.0f} |")
        g = by[(GUARD, alg)]
        if (BARE, alg) in by:
            bare_s = by[(BARE, alg)]
            print(f"| **guard / bare endpoint** | {alg} | **{med(g, 'rps') / med(bare_s, 'rps'):.2f}×** | "
                  f"{med(g, 'p50') / med(bare_s, 'p50'):.2f}× | {med(g, 'p99') / med(bare_s, 'p99'):.2f}× | "
                  f"{cpu_ratio(med(g, 'cpu'), med(bare_s, 'cpu'))} |")
        for label, name in ((INCUMBENT, "ADR-007's"), (INCUMBENT_ASGI, "ASGI")):
            i = by[(label, alg)]
            print(f"| **guard / incumbent ({name} audit)** | {alg} | **{med(g, 'rps') / med(i, 'rps'):.2f}×** | "
                  f"{med(g, 'p50') / med(i, 'p50'):.2f}× | **{med(g, 'p99') / med(i, 'p99'):.2f}×** | "
                  f"{cpu_ratio(med(g, 'cpu'), med(i, 'cpu'))} |")
        b = by[(BITSEC, alg)]
        for label, name in ((INCUMBENT, "ADR-007's"), (INCUMBENT_ASGI, "ASGI")):
            i = by[(label, alg)]
            print(f"| **bitsec / incumbent ({name} audit)** | {alg} | **{med(b, 'rps') / med(i, 'rps'):.2f}×** | "
                  f"{med(b, 'p50') / med(i, 'p50'):.2f}× | **{med(b, 'p99') / med(i, 'p99'):.2f}×** | "
                  f"{cpu_ratio(med(b, 'cpu'), med(i, 'cpu'))} |")
    if QUICK:
        return
    print()
    print("### Where the time goes (HS256): controls added one at a time")
    print()
    print("CPU µs/request: the uvicorn process's CPU time (all threads) during a run / the requests it "
          "answered; + = what the last control added. req/s follows it when the machine is quiet.")
    print()
    print("| app | req/s | CPU µs/request | + µs | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    bare = by[(BARE, "HS256")]
    us_bare = row(BARE, bare)
    full = bench_apps.LAYERS
    for stack, last in (("bitsec", BITSEC), ("incumbent", INCUMBENT)):
        prev = prev3 = us_bare
        for k in range(1, len(full) + 1):
            label = last if k == len(full) else f"{stack}: " + " + ".join(full[:k])
            name = f"{stack}: " + " + ".join(full[:k])
            if k == len(full) and stack == "incumbent":
                name += " (`@app.middleware`)"
            prev3 = prev
            prev = row(name, by[(label, "HS256")], prev)
        if stack == "incumbent":
            row("incumbent: token + permission + ratelimit + audit (plain ASGI)", by[(INCUMBENT_ASGI, "HS256")], prev3)
    row(ALWAYS, by[(ALWAYS, "HS256")], med(by[(BITSEC, "HS256")], "cpu"))
    print()
    print(f"Ceiling: the bare endpoint serves {med(bare, 'rps'):.0f} req/s, "
          f"{med(bare, 'rps') / med(by[(INCUMBENT, 'HS256')], 'rps'):.1f}× the incumbent with ADR-007's middleware "
          f"and {med(bare, 'rps') / med(by[(INCUMBENT_ASGI, 'HS256')], 'rps'):.1f}× the one with the ASGI "
          "middleware: no security stack can beat the incumbent by more than that in this setup. In CPU per "
          f"request: {med(bare, 'cpu'):.0f} µs bare, {med(by[(BITSEC, 'HS256')], 'cpu'):.0f} µs bitsec, "
          f"{med(by[(INCUMBENT_ASGI, 'HS256')], 'cpu'):.0f} µs incumbent (ASGI): the security work is "
          f"{med(by[(BITSEC, 'HS256')], 'cpu') - med(bare, 'cpu'):.0f} µs vs "
          f"{med(by[(INCUMBENT_ASGI, 'HS256')], 'cpu') - med(bare, 'cpu'):.0f} µs per request.")
    if "--no-micro" in sys.argv:
        return
    print()
    print("### The same controls in process (HS256 unless stated, µs per call, best of 5)")
    print()
    print("| bitsec call | µs | incumbent call | µs |")
    print("|---|---:|---|---:|")
    rows = micro(keys["HS256"], work)
    if "RS256" in keys:
        rows[1:1] = verify_rows(keys["RS256"], work)
    for a, ta, b, tb in rows:
        print(f"| {a} | {ta:.2f} | {b} | {'' if tb != tb else f'{tb:.2f}'} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
