"""No request can silence the audit trail, and bodies are bounded at the edge, over real HTTP:
the reference service (and a small app) under uvicorn on loopback.

- A DELETE and an administrator's GDPR export with crafted paths and headers (over-long,
  non-ASCII, percent-encoded) are recorded, with the route template as the resource; what is
  too long is cut by bitsec (by bytes, at a character boundary) and named in ``truncated``.
- A huge body is answered 413 before it is all sent (chunked: counted while streaming;
  Content-Length: at once); a slow body 408.
- A 500 carries the security headers and the request id, and is recorded.
- Refused events leave ``audit``/``event_rejected`` records that the verifier counts.
"""
from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

import bitsec
from bitsec.fastapi import (AuditMiddleware, RequestLimitsMiddleware, SecurityHeadersMiddleware, bitsec_lifespan,
                            body_limit)

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.fastapi_service import create_app, create_user  # noqa: E402

CONFIG = ROOT / "examples" / "fastapi_service" / "config.json"
API = "/api/v1"
SECURITY_HEADERS = ("content-security-policy", "strict-transport-security", "x-frame-options",
                    "x-content-type-options", "referrer-policy")


class Served:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive()


def records(path: Path) -> list[dict[str, Any]]:
    # split on newlines only: str.splitlines would also split inside a record at U+2028
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def recorded(rt: bitsec.Runtime, path: Path, pred: Any) -> list[dict[str, Any]]:
    """The records matching ``pred`` once there is one: the middleware emits after the
    response is sent, so the client may see the response first."""
    deadline = time.monotonic() + 30
    while True:
        rt.audit_flush()
        found = [x for x in records(path) if pred(x)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def rid_is(rid: str) -> Any:
    return lambda x: x.get("details", {}).get("request_id") == rid


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[tuple[Served, FastAPI]]:
    app = create_app(CONFIG, f"sqlite:///{tmp_path / 'service.db'}", body_timeout=2.0)
    create_user(app, "alice", "alice-password-1", "admin", "fab-1")
    create_user(app, "victor", "victor-password-1", "viewer", "fab-1")
    with Served(app) as s:
        yield s, app


def login(base: str, user: str) -> dict[str, str]:
    r = httpx.post(f"{base}{API}/auth/login", json={"username": user, "password": f"{user}-password-1"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def raw_request(port: int, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(head)
    return s


async def asgi_status(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], *,
                      client: tuple[str, int] | None = ("127.0.0.1", 50000), query: bytes = b"") -> int:
    """One request through the ASGI call itself (for what an HTTP client cannot send: a URL
    over httpx's limit, no peer address); the response's status."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
               "path": path, "raw_path": path.encode("utf-8"), "root_path": "", "query_string": query,
               "server": ("testserver", 80), "client": client, "headers": [(b"host", b"testserver"), *headers]},
              receive, send)
    return statuses[0]


def read_response(s: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
    return status, headers


# ---- the audit trail cannot be silenced by a request --------------------------------------

def test_delete_with_crafted_path_and_headers_is_recorded_with_the_route(service: tuple[Served, FastAPI]) -> None:
    served, app = service
    h = login(served.base, "alice")
    r = httpx.post(f"{served.base}{API}/equipment", json={"name": "Lathe"}, headers=h)
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    # The id behind 3000 percent-encoded zeros (9000 bytes of path, 3000+ characters once
    # decoded); a Latin-1 user agent of 1500 characters (3000 bytes in UTF-8); an over-long
    # request id (replaced by a fresh one).
    path = f"{API}/equipment/" + "%30" * 3000 + str(eid)
    head = (f"DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {h['Authorization']}\r\n"
            f"X-Request-ID: {'r' * 300}\r\nConnection: close\r\n").encode()
    head += b"User-Agent: " + "\u00e9\u00fc\t\u00ff".encode("latin-1") * 375 + b"\r\n\r\n"
    s = raw_request(served.port, head)
    status, headers = read_response(s)
    s.close()
    assert status == 204
    rid = headers["x-request-id"]
    assert rid != "r" * 300 and len(rid) == 36
    recs = recorded(app.state.bitsec, app.state.audit_path, rid_is(rid))
    assert len(recs) == 1, recs
    rec = recs[0]
    assert (rec["type"], rec["action"], rec["result"]) == ("data_access", "delete", "success")
    assert rec["resource"] == f"{API}/equipment/{{eid}}"
    assert rec["actor"] == str(_user_id(app, "alice")) and rec["details"]["status"] == 204 and rec["details"]["method"] == "DELETE"
    assert len(rec["user_agent"].encode()) <= 1024 and ("\u00e9\u00fc\t\u00ff" * 375).startswith(rec["user_agent"])
    assert len(rec["resource_id"].encode()) <= 256 and rec["resource_id"].startswith("000")
    assert {"user_agent", "resource_id"} <= set(rec["truncated"])
    assert httpx.get(f"{served.base}{API}/equipment/{eid}", headers=h).status_code == 404  # it was deleted
    report = bitsec.audit_verify([app.state.audit_path])
    assert report.intact and report.events_rejected == 0


def test_admin_gdpr_export_with_crafted_headers_is_recorded(service: tuple[Served, FastAPI]) -> None:
    served, app = service
    h = login(served.base, "alice")
    uid = _user_id(app, "victor")
    ua = ("\u00e4\u00f6\u00fc" * 700).encode("latin-1")  # 2100 characters, 4200 bytes in UTF-8
    r = httpx.get(f"{served.base}{API}/users/{uid}/export", headers={**h, "User-Agent": ua,
                                                                     "X-Request-ID": "export-1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "export-1"
    recs = recorded(app.state.bitsec, app.state.audit_path, lambda x: x.get("subtype") == "gdpr_export")
    assert len(recs) == 1
    rec = recs[0]
    assert rec["actor"] == str(_user_id(app, "alice")) and rec["resource_id"] == str(uid) and rec["details"]["request_id"] == "export-1"
    assert len(rec["user_agent"].encode()) <= 1024 and ua.decode("latin-1").startswith(rec["user_agent"])
    assert rec["truncated"] == ["user_agent"]
    assert bitsec.audit_verify([app.state.audit_path]).intact


def _user_id(app: FastAPI, name: str) -> int:
    from sqlalchemy import select
    with app.state.sessions() as db:
        return int(db.scalar(select(app.state.models.User.id).where(app.state.models.User.username == name)))


def test_out_of_range_numbers_answer_with_headers_and_request_id(service: tuple[Served, FastAPI]) -> None:
    served, app = service
    h = login(served.base, "alice")
    for path in (f"{API}/equipment/{10 ** 30}", f"{API}/equipment/-{10 ** 30}"):
        r = httpx.get(f"{served.base}{path}", headers={**h, "X-Request-ID": "big-number"})
        for name in SECURITY_HEADERS:
            assert name in r.headers, (path, r.status_code, name)
        assert r.headers["x-request-id"] == "big-number"


ISS, AUD, SECRET = "https://auth.example", "erp-api", "s3cr3t-for-tests-only-0123456789abcdef"


@pytest.fixture(params=["guard", "audit"])
def amplified(request: Any, tmp_path: Path) -> Iterator[tuple[str, FastAPI, bitsec.Runtime, Path, str]]:
    """A small app recording through the guard or ``AuditMiddleware`` (with a bearer
    dependency), and an administrator's token."""
    from fastapi import Depends, Response

    from bitsec.fastapi import BearerAuth, GuardMiddleware, guard

    log = tmp_path / "audit.log"
    rt = bitsec.Runtime({"allow_inline_secrets": True,
                         "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET}}],
                                    "issuer": ISS, "audience": [AUD], "required_claims": ["sub"]},
                         "permissions": {"policy": {"resources": ["equipment"], "actions": ["delete"],
                                                     "roles": {"admin": {"allow": ["equipment:delete"]}}}},
                         "audit": {"sinks": [{"type": "file", "path": str(log)}], "durability": "none"}})
    app = FastAPI(lifespan=bitsec_lifespan(rt))
    deps = [] if request.param == "guard" else [Depends(BearerAuth())]

    @app.delete("/equipment/{eid:path}", status_code=204, response_model=None, dependencies=deps)
    @guard("equipment", "delete")
    def delete(eid: str) -> Response:
        return Response(status_code=204)

    app.add_middleware(GuardMiddleware if request.param == "guard" else AuditMiddleware)
    now = int(time.time())
    token = rt.sign_token({"sub": "mallory", "roles": ["admin"], "iss": ISS, "aud": AUD, "iat": now,
                           "exp": now + 600, "tenant_id": "t1"})
    try:
        yield request.param, app, rt, log, token
    finally:
        rt.close()


def test_a_huge_non_ascii_user_agent_keeps_the_record(
        amplified: tuple[str, FastAPI, bitsec.Runtime, Path, str]) -> None:
    # 180 KB of bytes >= 0x80 (uvicorn takes such a header): each is written \u00a0 (6 bytes)
    # in the record's JSON, which was then over the 1 MiB bitsec refuses whole: the record of
    # the delete was lost (an audit/event_rejected in its place, without actor or request id).
    _, app, rt, log, token = amplified
    with Served(app) as served:
        s = raw_request(served.port, (f"DELETE /equipment/8 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      f"Authorization: Bearer {token}\r\nX-Request-ID: ua-huge\r\n"
                                      "Connection: close\r\n").encode() + b"User-Agent: " + b"\xa0" * 180_000
                        + b"\r\n\r\n")
        status, _ = read_response(s)
        s.close()
        assert status == 204
        (rec,) = recorded(rt, log, rid_is("ua-huge"))
    assert rec["type"] == "data_access" and rec["action"] == "delete" and rec["result"] == "success"
    assert rec["actor"] == "mallory" and rec["tenant"] == "t1" and rec["resource_id"] == "8"
    assert rec["user_agent"] == "\u00a0" * 512 and "user_agent" in rec["truncated"]  # (1,024 bytes)
    assert not [r for r in records(log) if r.get("subtype") == "event_rejected"]


def test_a_huge_non_ascii_path_keeps_the_record(amplified: tuple[str, FastAPI, bitsec.Runtime, Path, str]) -> None:
    # The path is in the record three times (details.path, path_params, resource_id), each
    # character 12 bytes of JSON: 360 KB of URL made a record over 1 MiB, refused whole.
    # (uvicorn's httptools refuses a URL over about 64 KB; other servers take more: the ASGI
    # app itself here.)
    from fastapi.testclient import TestClient

    _, app, rt, log, token = amplified
    value = "\U0001F600" * 30_000
    path = "/equipment/" + value

    with TestClient(app) as client:  # (the lifespan; httpx refuses a URL this long: the ASGI call itself)
        status = client.portal.call(lambda: asgi_status(
            app, "DELETE", path, [(b"authorization", f"Bearer {token}".encode()), (b"x-request-id", b"path-huge")]))
        assert status == 204
        (rec,) = recorded(rt, log, rid_is("path-huge"))
    assert rec["type"] == "data_access" and rec["actor"] == "mallory" and rec["details"]["status"] == 204
    # cut by the middleware (named in details.cut), then by bitsec to max_event_bytes
    # (named in truncated): what is kept is the start of each value
    d = rec["details"]
    assert d["cut"] == ["path", "path_params"]
    assert path.startswith(d["path"]) and len(d["path"]) > 200
    assert value.startswith(d["path_params"]["eid"]) and len(d["path_params"]["eid"]) > 200
    assert rec["resource_id"] == value[:64] and "resource_id" in rec["truncated"]  # (256 bytes)
    assert not [r for r in records(log) if r.get("subtype") == "event_rejected"]


# ---- request limits -------------------------------------------------------------------------

def test_a_huge_chunked_body_is_refused_before_it_is_sent(service: tuple[Served, FastAPI]) -> None:
    served, app = service
    s = raw_request(served.port, (f"POST {API}/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    piece = b"x" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    total = 200 << 20
    sent = 0
    answered = False
    try:
        while sent < total:
            s.sendall(chunk)
            sent += len(piece)
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                answered = True
                break
    except (BrokenPipeError, ConnectionResetError):
        answered = True  # the server answered and closed while we were still sending
    assert answered and sent < total, f"no answer before the whole body was sent ({sent} bytes)"
    status, headers = read_response(s)
    s.close()
    assert status == 413
    assert all(name in headers for name in SECURITY_HEADERS) and "x-request-id" in headers
    # The refusal is in the trail, with the canonical resource.
    rec = recorded(app.state.bitsec, app.state.audit_path, rid_is(headers["x-request-id"]))
    assert len(rec) == 1 and rec[0]["resource"] == f"{API}/auth/login" and rec[0]["details"]["status"] == 413


def test_an_announced_huge_body_is_refused_at_once(service: tuple[Served, FastAPI]) -> None:
    served, _ = service
    s = raw_request(served.port, (f"POST {API}/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  f"Content-Type: application/json\r\nContent-Length: {200 << 20}\r\n\r\n").encode())
    status, headers = read_response(s)  # not a byte of the body was sent
    s.close()
    assert status == 413 and headers.get("connection") == "close"
    # Other routes: the 1 MiB default (an authorised caller's: the guard answers a request
    # without a valid token 401 before its body is read).
    r = httpx.post(f"{served.base}{API}/equipment", content=b"x" * ((1 << 20) + 1),
                   headers={"Content-Type": "application/json", **login(served.base, "alice")})
    assert r.status_code == 413
    r = httpx.post(f"{served.base}{API}/equipment", content=b"x" * ((1 << 20) + 1),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 401


def test_a_slow_body_is_answered_408(service: tuple[Served, FastAPI]) -> None:
    served, _ = service
    s = raw_request(served.port, (f"POST {API}/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user").encode())
    status, headers = read_response(s)  # the rest never comes
    s.close()
    assert status == 408
    assert all(name in headers for name in SECURITY_HEADERS) and "x-request-id" in headers


# ---- a small app: 500s, route limits ---------------------------------------------------------

@pytest.fixture()
def small_app(tmp_path: Path) -> Iterator[tuple[Served, FastAPI]]:
    cfg = {"audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.log")}], "durability": "none"}}
    app = FastAPI(lifespan=bitsec_lifespan(cfg))
    app.state.audit_log = tmp_path / "audit.log"

    @app.post("/boom/{item_id}")
    def boom(item_id: int) -> None:
        raise RuntimeError("a bug")

    @app.get("/boom")
    def boom_get() -> None:
        raise ValueError(10 ** 30)

    @app.post("/upload")
    @body_limit(64)
    async def upload(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    @app.post("/files/{name}")
    async def files(name: str, request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    @app.post("/other")
    async def other(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=1024, limits={"/files/{name}": 8})
    app.add_middleware(AuditMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    with Served(app) as s:
        yield s, app


def test_a_500_carries_the_security_headers_and_the_request_id(small_app: tuple[Served, FastAPI]) -> None:
    served, app = small_app
    for method, path in (("POST", "/boom/7"), ("GET", "/boom")):
        r = httpx.request(method, f"{served.base}{path}", headers={"X-Request-ID": f"req-{method}"})
        assert r.status_code == 500
        assert r.json() == {"detail": "Internal Server Error"}  # nothing of the exception
        for name in SECURITY_HEADERS:
            assert name in r.headers
        assert r.headers["x-request-id"] == f"req-{method}"
    recorded(app.state.bitsec, app.state.audit_log, rid_is("req-GET"))
    recorded(app.state.bitsec, app.state.audit_log, rid_is("req-POST"))
    recs = {x["details"]["request_id"]: x for x in records(app.state.audit_log)
            if "request_id" in x.get("details", {})}
    post, get = recs["req-POST"], recs["req-GET"]
    assert (post["type"], post["result"], post["resource"], post["resource_id"], post["details"]["status"]) == (
        "data_access", "failure", "/boom/{item_id}", "7", 500)
    assert (get["type"], get["subtype"], get["result"], get["resource"]) == ("application", "server_error", "error", "/boom")


def test_route_limits(small_app: tuple[Served, FastAPI]) -> None:
    served, _ = small_app
    assert httpx.post(f"{served.base}/upload", content=b"x" * 64).json() == {"n": 64}
    assert httpx.post(f"{served.base}/upload", content=b"x" * 65).status_code == 413  # body_limit(64)
    assert httpx.post(f"{served.base}/files/a", content=b"x" * 8).json() == {"n": 8}
    assert httpx.post(f"{served.base}/files/a", content=b"x" * 9).status_code == 413  # the dict, by template
    assert httpx.post(f"{served.base}/other", content=b"x" * 1024).json() == {"n": 1024}
    assert httpx.post(f"{served.base}/other", content=b"x" * 1025).status_code == 413  # the default

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"y" * 16

    # Chunked (no Content-Length): counted while streaming.
    assert httpx.post(f"{served.base}/upload", content=chunks()).status_code == 413


# ---- refused events are recorded --------------------------------------------------------------

def test_refused_events_are_recorded_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    with bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(log)}], "rejected_interval_ms": 3600000}}) as rt:
        for bad in ('{"type": "session", "actor": "\udc80"}',  # a lone surrogate: invalid UTF-8
                    {"type": "session", "details": {"request_id": "r-1", "a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}},
                    {"type": "session", "colour": "hunter2"}, {"type": "nonsense"}, {"type": "session", "result": "x" * 5000}):
            with pytest.raises(bitsec.BitsecError):
                rt.audit_emit(bad)
        # (a mapping's lone surrogate is U+FFFD: recorded, not refused)
        replaced = rt.audit_emit({"type": "session", "actor": "\udc80"})
        # Every text member over its limit, with control characters and non-ASCII text.
        text = "\x00\x1f\u2028\u00e9\U0001d11e" * 1000
        seq = rt.audit_emit({"type": "authentication", "subtype": "s" * 100, "reason": text, "actor": text, "tenant": text,
                             "user_agent": text, "session_id": text, "resource": text, "resource_id": text,
                             "action": text, "data_classification": text, "details": {"k": text * 10}})
        assert seq
        rt.audit_flush()
        recs = records(log)
        rejected = [x for x in recs if x.get("subtype") == "event_rejected"]
        assert [x["details"]["count"] for x in rejected] == [1, 4]
        assert rejected[0]["details"]["status"] == "BITSEC_E_MALFORMED"
        assert "hunter2" not in json.dumps(rejected) and "\\udc80" not in json.dumps(rejected)
        assert next(x for x in recs if x["seq"] == replaced)["actor"] == "\ufffd"
        ok = next(x for x in recs if x["seq"] == seq)
        assert set(ok["truncated"]) == {"subtype", "reason", "actor", "tenant", "user_agent", "session_id", "resource",
                                        "resource_id", "action", "data_classification", "details.k"}
        for name, limit in (("reason", 1024), ("actor", 256), ("action", 64), ("user_agent", 1024)):
            assert len(ok[name].encode()) <= limit and text.startswith(ok[name])
        assert rt.audit_stats()["rejected"] == 5
    report = bitsec.audit_verify([log])
    assert report.intact and report.events_rejected == 5
