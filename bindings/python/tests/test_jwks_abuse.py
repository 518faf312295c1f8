"""The JWKS refresher (bitsec.fastapi.JWKSBackgroundRefresher) against a hostile or broken
identity provider, a raw HTTP server on 127.0.0.1 (a socket in a thread) that can answer
malformed responses:

- a malformed answer (a bad status line, a truncated body, an overlong header line, JSON nested
  too deep) is a failed fetch like any other: the last good set stays, ``last_error`` says
  why, the background thread keeps refreshing, and a token with an unknown kid is a 401,
  never a 500;
- a token with an unknown (invented) kid never makes the request fetch or wait for a fetch:
  while the provider holds the refetch it asked for, the event loop keeps serving (uvicorn on
  loopback) and ``rt.verify_token`` refuses at once; the background thread makes the refetch,
  at most one per ``cooldown``, and a key the provider just published is accepted after it."""
from __future__ import annotations

import json
import socket
import threading
import time
import warnings
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import bitsec
from bitsec.fastapi import BearerAuth, JWKSBackgroundRefresher, bitsec_jwks_lifespan
from bitsec.tokens import UnknownKeyError
from test_fastapi_jwks import jwk, token  # noqa: E402  (the same keys and tokens)

#: How long a test waits for something that must happen (a background fetch). Only a deadlock
#: breaker: nothing is asserted about how fast it happens.
PATIENCE = 30.0


def good(kids: list[str]) -> bytes:
    body = json.dumps({"keys": [jwk(k) for k in kids]}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)) + body


#: Answers the HTTP client cannot read, or whose body is no JSON the parser can take; each
#: raised an exception refresh() did not catch (http.client.HTTPException is no OSError).
MALFORMED = {
    "bad_status_line": b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",  # BadStatusLine
    # a chunk announced 1000 bytes long, cut after ten: IncompleteRead
    "incomplete_read": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        b"3e8\r\n{\"keys\": ["),
    "line_too_long": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
    "deep_json": (b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n"
                  + b"[" * 200000),  # RecursionError in json.loads
}


class RawIdP:
    """A JWKS URL on 127.0.0.1 answering raw bytes: ``answer(n)`` gives the bytes of the n-th
    request (from 1); ``hits`` counts requests. One thread per connection."""

    def __init__(self, answer: Callable[[int], bytes]) -> None:
        self.answer = answer
        self.hits = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/jwks.json"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(PATIENCE)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                with self.lock:
                    self.hits += 1
                    n = self.hits
                conn.sendall(self.answer(n))
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def wait_until(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not pred():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def runtime() -> Any:
    # The configured set holds k0 only; the refresher replaces it with the URL's.
    return bitsec.Runtime({"allow_inline_secrets": True, "tokens": {"jwks": {"keys": [jwk("k0")]}}})


@pytest.fixture()
def idp_factory() -> Iterator[Callable[[Callable[[int], bytes]], RawIdP]]:
    made: list[RawIdP] = []

    def make(answer: Callable[[int], bytes]) -> RawIdP:
        made.append(RawIdP(answer))
        return made[-1]

    yield make
    for s in made:
        s.close()


# ---- a malformed answer is a failed fetch ---------------------------------------------------

@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_answer_is_a_failed_fetch(kind: str, idp_factory: Any) -> None:
    idp = idp_factory(lambda n: good(["k1"]) if n == 1 else MALFORMED[kind])
    with runtime() as rt:
        r = JWKSBackgroundRefresher(rt, idp.url, ttl=3600, cooldown=0.0)
        assert r.refresh() is True
        assert r.refresh() is False  # no exception: a failed fetch
        assert r.failures == 1 and r.last_error is not None
        assert rt.verify_token(token("k1"))["sub"] == "u1"  # the last good set stays


def test_the_background_thread_survives_a_malformed_answer(idp_factory: Any) -> None:
    """One bad status line, then the provider withdraws k1 and publishes k2: the thread
    (ttl/retry of a few hundredths of a second) keeps refreshing and follows it."""
    idp = idp_factory(lambda n: good(["k1"]) if n == 1 else MALFORMED["bad_status_line"] if n == 2 else good(["k2"]))
    with runtime() as rt:
        r = JWKSBackgroundRefresher(rt, idp.url, ttl=0.05, retry=0.05, cooldown=3600)
        r.start()
        try:
            assert rt.verify_token(token("k1"))["sub"] == "u1"
            wait_until(lambda: r.changes == 2, "the set after the bad answer was loaded")
            assert r.failures == 1
            assert r._thread is not None and r._thread.is_alive()
            with pytest.raises(UnknownKeyError):
                rt.verify_token(token("k1"))  # withdrawn by the provider: no longer trusted
            assert rt.verify_token(token("k2"))["sub"] == "u1"
        finally:
            r.stop()


def test_the_background_thread_survives_an_unexpected_error(idp_factory: Any) -> None:
    """Whatever one iteration raises, the thread records it and carries on."""
    idp = idp_factory(lambda n: good(["k1"]) if n == 1 else good(["k2"]))
    with runtime() as rt:
        r = JWKSBackgroundRefresher(rt, idp.url, ttl=0.05, retry=0.05, cooldown=3600)
        real, calls = r.refresh, [0]

        def refresh() -> bool:
            calls[0] += 1
            if calls[0] == 2:  # the thread's first refresh
                raise RuntimeError("boom")
            return real()

        r.refresh = refresh  # type: ignore[method-assign]
        r.start()
        try:
            wait_until(lambda: r.changes == 2, "the thread refreshed after the error")
            assert r._thread is not None and r._thread.is_alive()
        finally:
            r.stop()


def test_an_unknown_kid_during_a_malformed_answer_is_refused_not_an_error(idp_factory: Any) -> None:
    idp = idp_factory(lambda n: good(["k1"]) if n == 1 else MALFORMED["bad_status_line"])
    cfg = {"allow_inline_secrets": True, "tokens": {"jwks": {"keys": [jwk("k0")]}}}
    app = FastAPI(lifespan=bitsec_jwks_lifespan(cfg, idp.url, ttl=3600, cooldown=0.0))

    @app.get("/me")
    async def me(claims: Any = Depends(BearerAuth())) -> dict:
        return {"sub": claims["sub"]}

    with TestClient(app, raise_server_exceptions=False) as c:
        rt = app.state.bitsec
        with pytest.raises(UnknownKeyError):
            rt.verify_token(token("invented-1"))
        r = c.get("/me", headers={"Authorization": f"Bearer {token('invented-2')}"})
        assert r.status_code == 401 and r.json() == {"detail": "Invalid token"}
        assert c.get("/me", headers={"Authorization": f"Bearer {token('k1')}"}).json() == {"sub": "u1"}


def test_a_hook_that_raises_is_a_refused_token() -> None:
    with runtime() as rt:
        def hook() -> bool:
            raise RuntimeError("boom")

        rt._unknown_kid_hook = hook
        with pytest.raises(UnknownKeyError):
            rt.verify_token(token("invented"))
        with pytest.raises(UnknownKeyError):
            rt.verify_token(token("invented"), at=time.time() + 0.5)  # (the fractional-instant path)


# ---- an unknown kid never fetches on the request path ----------------------------------------

class Hold:
    """An answer that holds the refetch: the provider publishes ``kids`` only once the test
    releases it. ``holding`` is set when a request waits; ``waiting`` counts those waiting now."""

    def __init__(self, first: list[str], kids: list[str]) -> None:
        self.first, self.kids = first, kids
        self.holding = threading.Event()
        self.release = threading.Event()
        self.waiting = 0
        self.lock = threading.Lock()

    def __call__(self, n: int) -> bytes:
        if n == 1:
            return good(self.first)
        with self.lock:
            self.waiting += 1
        self.holding.set()
        self.release.wait(PATIENCE)  # (a deadlock breaker: the test releases it)
        with self.lock:
            self.waiting -= 1
        return good(self.kids)


def test_verify_token_refuses_an_unknown_kid_without_waiting_for_the_fetch(idp_factory: Any) -> None:
    hold = Hold(["k1"], ["k1", "k2"])
    idp = idp_factory(hold)
    with runtime() as rt:
        r = JWKSBackgroundRefresher(rt, idp.url, ttl=3600, cooldown=3600, timeout=PATIENCE * 2)
        r.start()
        try:
            with pytest.raises(UnknownKeyError):
                rt.verify_token(token("k2"))  # published, but not yet loaded: asks for a refetch
            assert hold.holding.wait(PATIENCE), "the background thread never fetched"
            # While the provider holds that fetch, unknown kids are refused at once.
            for i in range(20):
                with pytest.raises(UnknownKeyError):
                    rt.verify_token(token(f"invented-{i}"))
            assert hold.waiting == 1 and not hold.release.is_set()
            hold.release.set()
            wait_until(lambda: r.changes == 2, "the refetch loaded the new set")
            assert rt.verify_token(token("k2"))["sub"] == "u1"
        finally:
            hold.release.set()
            r.stop()
        # (the thread has ended: final) one refetch for all those unknown kids
        assert idp.hits == 2 and r.unknown_kid_refetches == 1


def test_an_unknown_kid_does_not_stall_the_event_loop(idp_factory: Any) -> None:
    """The reviewer's scenario under uvicorn on loopback: BearerAuth verifies inline (HS256,
    revocation in the process); a token with an invented kid while the provider is slow must
    not stop the server: /health is answered while the provider still holds the refetch."""
    hold = Hold(["k1"], ["k1", "k2"])
    idp = idp_factory(hold)
    cfg = {"allow_inline_secrets": True, "tokens": {"jwks": {"keys": [jwk("k0")]}, "require_kid": True}}
    app = FastAPI(lifespan=bitsec_jwks_lifespan(cfg, idp.url, ttl=3600, cooldown=3600, timeout=PATIENCE * 2))
    bearer = BearerAuth()

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.get("/me")
    async def me(claims: Any = Depends(bearer)) -> dict:
        return {"sub": claims["sub"]}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn started")
        assert server.started
        with httpx.Client(base_url=base, timeout=PATIENCE * 3) as c:
            assert c.get("/me", headers={"Authorization": f"Bearer {token('k1')}"}).json() == {"sub": "u1"}
            answers: list[int] = []

            def attack() -> None:
                with httpx.Client(base_url=base, timeout=PATIENCE * 3) as a:
                    answers.append(a.get("/me", headers={"Authorization": f"Bearer {token('invented')}"}).status_code)

            attacker = threading.Thread(target=attack)
            attacker.start()
            assert hold.holding.wait(PATIENCE), "the unknown kid never caused a refetch"
            # The provider holds the refetch: the server still answers, on the event loop.
            assert c.get("/health").json() == {"ok": True}
            assert hold.waiting == 1, "/health was answered only after the provider's answer"
            assert c.get("/me", headers={"Authorization": f"Bearer {token('k1')}"}).json() == {"sub": "u1"}
            assert c.get("/me", headers={"Authorization": f"Bearer {token('k2')}"}).status_code == 401
            assert hold.waiting == 1 and not hold.release.is_set()  # (answered while it held)
            attacker.join(PATIENCE * 3)
            assert answers == [401]
            hold.release.set()
            refresher = app.state.bitsec_jwks
            wait_until(lambda: refresher.changes == 2, "the refetch loaded the new set")
            # The key the provider published is accepted after the background refetch.
            assert c.get("/me", headers={"Authorization": f"Bearer {token('k2', 'u2')}"}).json() == {"sub": "u2"}
    finally:
        hold.release.set()
        server.should_exit = True
        thread.join(PATIENCE)
        sock.close()
    assert not thread.is_alive()
    assert idp.hits == 2


def test_unknown_kid_refetches_stay_one_per_cooldown(idp_factory: Any) -> None:
    """Unknown kids within the cooldown of the last refetch: refused, and one deferred refetch
    when the cooldown ends (a key published meanwhile is then accepted without another
    unknown-kid token); never more than one refetch per cooldown."""
    answers = {1: good(["k1"]), 2: good(["k1", "k2"])}
    idp = idp_factory(lambda n: answers.get(n, good(["k1", "k2", "k3"])))
    cooldown = 1.0
    with runtime() as rt:
        r = JWKSBackgroundRefresher(rt, idp.url, ttl=3600, cooldown=cooldown)
        r.start()
        try:
            t0 = time.monotonic()
            with pytest.raises(UnknownKeyError):
                rt.verify_token(token("k2"))
            wait_until(lambda: r.changes == 2, "the first unknown-kid refetch")
            assert rt.verify_token(token("k2"))["sub"] == "u1"
            for i in range(100):
                with pytest.raises(UnknownKeyError):
                    rt.verify_token(token(f"invented-{i}"))
            # k3, published at the third fetch: accepted once the deferred refetch ran, with no
            # unknown-kid token after these.
            wait_until(lambda: r.changes == 3, "the deferred refetch")
            assert rt.verify_token(token("k3"))["sub"] == "u1"
        finally:
            r.stop()
        elapsed = time.monotonic() - t0
    # (the thread has ended: final) each refetch starts at least a cooldown after the last
    assert 2 <= r.unknown_kid_refetches <= 1 + elapsed / cooldown
    assert idp.hits == 1 + r.unknown_kid_refetches


def test_guard_middleware_asks_for_a_refetch_on_an_unknown_kid(idp_factory: Any) -> None:
    """GuardMiddleware decides the token in one native call (no verify_token): a token refused
    for an unknown kid asks the refresher's thread for the refetch too, so a key the provider
    publishes is accepted without waiting for the TTL (3600 s here)."""
    from bitsec.fastapi import GuardMiddleware, guard, guard_claims

    hold = Hold(["k1"], ["k1", "k2"])
    idp = idp_factory(hold)
    cfg = {"allow_inline_secrets": True, "tokens": {"jwks": {"keys": [jwk("k0")]}, "require_kid": True}}
    app = FastAPI(lifespan=bitsec_jwks_lifespan(cfg, idp.url, ttl=3600, cooldown=3600, timeout=PATIENCE * 2))

    @app.get("/me")
    @guard()
    async def me(claims: Any = Depends(guard_claims)) -> dict:
        return {"sub": claims["sub"]}

    app.add_middleware(GuardMiddleware)
    with TestClient(app) as c:
        assert c.get("/me", headers={"Authorization": f"Bearer {token('k1')}"}).json() == {"sub": "u1"}
        assert c.get("/me", headers={"Authorization": f"Bearer {token('k2')}"}).status_code == 401
        assert hold.holding.wait(PATIENCE), "the unknown kid never caused a refetch"
        # refused at once while the provider holds the refetch
        assert c.get("/me", headers={"Authorization": f"Bearer {token('invented')}"}).status_code == 401
        assert hold.waiting == 1
        hold.release.set()
        refresher = app.state.bitsec_jwks
        wait_until(lambda: refresher.changes == 2, "the refetch loaded the new set")
        assert c.get("/me", headers={"Authorization": f"Bearer {token('k2', 'u2')}"}).json() == {"sub": "u2"}
    assert idp.hits == 2 and refresher.unknown_kid_refetches == 1
