"""The JWKS refresher of bitsec.fastapi against a real HTTP server on 127.0.0.1 (http.server in
a thread): rotation under load (threads verifying while the keys rotate), the last good set
kept when the URL fails, the unknown-kid refetch rate limited and made by the background
thread, an audit event per change, and BearerAuth following a rotation without extra code."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi import Depends, FastAPI

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import bitsec
from bitsec.fastapi import BearerAuth, JWKSBackgroundRefresher, bitsec_jwks_lifespan
from bitsec.tokens import UnknownKeyError


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def secret(kid: str) -> bytes:
    return hashlib.sha256(kid.encode()).digest()


def jwk(kid: str) -> dict:
    return {"kty": "oct", "kid": kid, "alg": "HS256", "use": "sig", "k": b64(secret(kid))}


def token(kid: str, sub: str = "u1") -> str:
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    p = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 600}).encode())
    sig = hmac.new(secret(kid), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


class JWKSServer:
    """Serves ``{"keys": [...]}`` of the current kids; ``fail`` makes it answer 500."""

    def __init__(self, kids: list[str]) -> None:
        self.kids = list(kids)
        self.fail = False
        self.hits = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with outer.lock:
                    outer.hits += 1
                    fail, kids = outer.fail, list(outer.kids)
                if fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [jwk(k) for k in kids]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def set(self, kids: list[str]) -> None:
        with self.lock:
            self.kids = list(kids)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[JWKSServer]:
    s = JWKSServer(["k1"])
    yield s
    s.close()


def wait_until(pred: Any, what: str) -> None:
    """Waits for a background fetch (a deadlock breaker, not a time limit under test)."""
    deadline = time.monotonic() + 30.0
    while not pred():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def runtime(tmp_path: Path) -> Any:
    # The configured set holds k0 only; the refresher replaces it with the URL's.
    return bitsec.Runtime({"allow_inline_secrets": True,
                           "tokens": {"jwks": {"keys": [jwk("k0")]}},
                           "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.log")}],
                                     "durability": "none"}})


def audit_records(rt: Any, tmp_path: Path) -> list[dict]:
    rt.audit_flush()
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines() if line.strip()]


def test_url_rules() -> None:
    with bitsec.Runtime({"allow_inline_secrets": True, "tokens": {"jwks": {"keys": [jwk("k0")]}}}) as rt:
        for bad in ("http://idp.example.com/jwks", "ftp://127.0.0.1/x", "file:///etc/passwd", "https:///x"):
            with pytest.raises(ValueError):
                JWKSBackgroundRefresher(rt, bad)
        JWKSBackgroundRefresher(rt, "https://idp.example.com/jwks")
        JWKSBackgroundRefresher(rt, "http://localhost:8080/jwks")
        JWKSBackgroundRefresher(rt, "http://[::1]:8080/jwks")


def test_failure_keeps_the_last_good_set_and_changes_are_audited(server: JWKSServer, tmp_path: Path) -> None:
    with runtime(tmp_path) as rt:
        r = JWKSBackgroundRefresher(rt, server.url, ttl=3600, cooldown=0.0)
        assert r.refresh() is True
        rt.verify_token(token("k1"))
        with pytest.raises(UnknownKeyError):
            rt.verify_token(token("k0"))  # the configured set was replaced
        assert r.refresh() is False and r.changes == 1  # unchanged: not reloaded, no event
        server.fail = True
        assert r.refresh() is False and r.last_error is not None and r.failures == 1
        rt.verify_token(token("k1"))  # last good set kept
        server.fail = False
        server.set(["k1", "k2"])
        assert r.refresh() is True
        changes = [e for e in audit_records(rt, tmp_path) if e.get("subtype") == "jwks_changed"]
        assert [(e["details"]["added"], e["details"]["removed"]) for e in changes] == [(["k1"], ["k0"]), (["k2"], [])]


def test_unknown_kid_refetch_is_rate_limited(server: JWKSServer, tmp_path: Path) -> None:
    with runtime(tmp_path) as rt:
        r = JWKSBackgroundRefresher(rt, server.url, ttl=3600, cooldown=3600)
        r.start()
        try:
            hits = server.hits
            server.set(["k1", "k2"])
            # The first token with the new kid is refused at once (verify_token never waits for
            # a download) and asks the background thread for a refetch, which loads the key.
            with pytest.raises(UnknownKeyError):
                rt.verify_token(token("k2"))
            wait_until(lambda: r.changes == 2, "the unknown-kid refetch")
            assert rt.verify_token(token("k2"))["sub"] == "u1"
            assert server.hits == hits + 1 and r.unknown_kid_refetches == 1
            # Invented kids: refused, and no further fetch within the cooldown.
            for i in range(200):
                with pytest.raises(UnknownKeyError):
                    rt.verify_token(token(f"forged-{i}"))
        finally:
            r.stop()
        # (the thread has ended: these counts are final)
        assert server.hits == hits + 1 and r.unknown_kid_refetches == 1
        assert rt._unknown_kid_hook is None


def test_rotation_under_load(server: JWKSServer, tmp_path: Path) -> None:
    """Threads verify tokens of the key that stays in every set while the set rotates; none is
    refused, and tokens of the newest key are accepted once it is published."""
    with runtime(tmp_path) as rt:
        r = JWKSBackgroundRefresher(rt, server.url, ttl=3600, cooldown=0.0)
        r.refresh()
        stable = token("k1")
        stop = threading.Event()
        errors: list[str] = []
        counts = [0] * 4

        def worker(i: int) -> None:
            while not stop.is_set():
                try:
                    rt.verify_token(stable)
                    counts[i] += 1
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            for n in range(2, 32):
                server.set(["k1", f"k{n}"])
                assert r.refresh() is True
                assert rt.verify_token(token(f"k{n}"))
                if n > 2:
                    with pytest.raises(UnknownKeyError):
                        rt.verify_token(token(f"k{n - 1}"))
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert errors == []
        assert all(c > 0 for c in counts)
        assert r.changes == 31


def test_bearer_auth_follows_a_rotation_through_the_lifespan(server: JWKSServer, tmp_path: Path) -> None:
    cfg = {"allow_inline_secrets": True, "tokens": {"jwks": {"keys": [jwk("k0")]}}}
    app = FastAPI(lifespan=bitsec_jwks_lifespan(cfg, server.url, ttl=3600, cooldown=3600))
    bearer = BearerAuth()

    @app.get("/me")
    def me(claims: Any = Depends(bearer)) -> dict:
        return {"sub": claims["sub"]}

    with TestClient(app) as c:
        assert app.state.bitsec_jwks.changes == 1  # fetched at startup
        assert c.get("/me", headers={"Authorization": f"Bearer {token('k1')}"}).json() == {"sub": "u1"}
        server.set(["k1", "k2"])  # the provider rotates
        # The first token of the new key is refused (the request does not wait for the
        # refetch it asked for); once the background thread has loaded the set, it is accepted.
        assert c.get("/me", headers={"Authorization": f"Bearer {token('k2', 'u2')}"}).status_code == 401
        refresher = app.state.bitsec_jwks
        wait_until(lambda: refresher.changes == 2, "the unknown-kid refetch")
        r = c.get("/me", headers={"Authorization": f"Bearer {token('k2', 'u2')}"})
        assert (r.status_code, r.json()) == (200, {"sub": "u2"})
        # Within the cooldown an invented kid is refused without a fetch.
        hits = server.hits
        assert c.get("/me", headers={"Authorization": f"Bearer {token('nope')}"}).status_code == 401
    assert server.hits == hits  # (the lifespan stopped the thread: final)
    assert not hasattr(app.state, "bitsec_jwks")
