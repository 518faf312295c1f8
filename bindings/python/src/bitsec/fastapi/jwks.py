"""The JWKS refresher in a FastAPI lifespan: the runtime's verification keys follow a JWKS URL
in the background.

- ``jwks_lifespan(url, ...)`` is an inner lifespan for ``bitsec_lifespan(config, then=...)``
  (it uses the runtime on ``app.state.bitsec``); ``bitsec_jwks_lifespan(config, url, ...)`` is
  both in one, usable as ``FastAPI(lifespan=...)``.
- At startup the set is fetched once (a failure is logged and the configured keys stay); then a
  background thread refetches it every ``ttl`` seconds (default 3600), and ``retry`` seconds
  (default 30) after a failed fetch.
- A token refused for an unknown ``kid`` (a key rotation at the identity provider) asks the
  background thread for one refetch, at most one per ``cooldown`` seconds (default 60) for
  the whole process, so tokens with invented kids cannot make the process fetch more often.
  The request never fetches nor waits for the fetch (it may be on the event loop): that
  token is refused, and tokens of the new key are accepted once the refetch has loaded it -
  one round trip to the provider later, or, when an unknown kid already caused a refetch
  less than ``cooldown`` ago, one round trip after that cooldown ends. ``BearerAuth``,
  ``GuardMiddleware``, any ``rt.verify_token`` and ``rt.guard_check`` get this without extra
  code.
- A failed fetch (network, HTTP status, size, invalid JSON or key set, and any other error: a
  malformed HTTP answer, JSON nested too deep) keeps the last good set and sets ``last_error``;
  it never stops the background thread nor reaches the request.
- The keys are replaced only when the set changed; each change is an audit event
  (``key_management`` / ``jwks_changed`` with the kids added and removed, when the runtime has
  an ``audit`` section) besides the library's own ``keys_reloaded`` record.
- ``https`` is required, except for a loopback host (``127.0.0.0/8``, ``::1``, ``localhost``);
  the response is bounded (``max_bytes``, default 1 MiB); redirects are not followed.

C programs do the same with ``bitsec_token_keys_reload`` (see its comment in the header).
"""
from __future__ import annotations

import contextlib
import hashlib
from http import HTTPStatus
import ipaddress
import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from typing import Any, AsyncIterator, Callable

import anyio
from fastapi import FastAPI

from ..errors import BitsecError
from ..runtime import Runtime
from ._common import STATE_ATTR
from .lifespan import bitsec_lifespan

__all__ = ["JWKSBackgroundRefresher", "jwks_lifespan", "bitsec_jwks_lifespan", "JWKS_STATE_ATTR"]

log = logging.getLogger("bitsec.fastapi.jwks")

#: Where the refresher lives: ``app.state.bitsec_jwks``.
JWKS_STATE_ATTR = "bitsec_jwks"


def _check_url(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    host = (p.hostname or "").lower()
    if not host:
        raise ValueError("JWKS URL has no host")
    if p.scheme == "https":
        return url
    if p.scheme == "http":
        loopback = host == "localhost"
        with contextlib.suppress(ValueError):
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        if loopback:
            return url
        raise ValueError("JWKS URL must be https:// (http:// only for a loopback host)")
    raise ValueError("JWKS URL must be https://")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an error: the configured URL is the trusted one


_opener = urllib.request.build_opener(_NoRedirect)


class JWKSBackgroundRefresher:
    """Keeps a runtime's JWK Set in step with ``url`` (see the module's documentation).

    ``start()`` runs the background thread, ``stop()`` ends it; ``refresh()`` fetches now;
    ``on_unknown_kid()``, installed on the runtime while started, asks the thread for a
    rate-limited refetch (it never fetches itself). Counters for monitoring also include
    ``unknown_kid_refetches``.
    Counters for monitoring: ``fetches``, ``failures``, ``changes``, ``last_error``.
    """

    def __init__(self, runtime: Runtime, url: str, *, ttl: float = 3600.0, cooldown: float = 60.0,
                 retry: float = 30.0, timeout: float = 5.0, max_bytes: int = 1 << 20) -> None:
        if ttl <= 0 or cooldown < 0 or retry <= 0 or timeout <= 0 or max_bytes <= 0:
            raise ValueError("ttl, retry, timeout and max_bytes must be positive, cooldown not negative")
        self.runtime = runtime
        self.url = _check_url(url)
        self.ttl = float(ttl)
        self.cooldown = float(cooldown)
        self.retry = float(retry)
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)
        self._fetch_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_unknown = float("-inf")  # when the last unknown-kid refetch started
        self._unknown_pending = False  # an unknown kid asked for a refetch the thread has not made yet
        self._digest: bytes | None = None
        self._kids: frozenset[str] = self._current_kids()
        self.fetches = 0
        self.failures = 0
        self.changes = 0
        self.unknown_kid_refetches = 0
        self.last_error: str | None = None

    def _current_kids(self) -> frozenset[str]:
        """The kids of the runtime's current JWK Set keys (for the first change's audit event)."""
        try:
            keys = self.runtime.describe()["sections"]["tokens"]["keys"]
            return frozenset(str(k["kid"]) for k in keys if k.get("origin") == "jwks" and k.get("kid") is not None)
        except (BitsecError, KeyError, TypeError):
            return frozenset()

    # ---- fetching ------------------------------------------------------------------------

    def _download(self) -> bytes:
        req = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with _opener.open(req, timeout=self.timeout) as resp:  # noqa: S310 (scheme checked)
            if resp.status != HTTPStatus.OK:
                raise ValueError(f"HTTP status {resp.status}")
            body: bytes = resp.read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            raise ValueError(f"response exceeds {self.max_bytes} bytes")
        return body

    def refresh(self) -> bool:
        """Fetches the set now; True when it changed (and the runtime's keys were replaced).
        A failure keeps the current keys: False, with ``last_error`` set."""
        with self._fetch_lock:
            self.fetches += 1
            try:
                body = self._download()
                doc = json.loads(body)
                if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
                    raise ValueError("not a JWK Set ({\"keys\": [...]})")
                canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
                digest = hashlib.sha256(canonical).digest()
                if digest == self._digest:
                    self.last_error = None
                    return False
                self.runtime.reload_token_keys(body)  # validates every key; nothing changes on error
            except Exception as e:  # noqa: BLE001 - any failure is a failed fetch, never the caller's
                # (OSError, URLError, ValueError, BitsecError, but also what the HTTP client or the
                # JSON parser raise for a malformed answer: http.client.HTTPException -
                # BadStatusLine, IncompleteRead, LineTooLong -, RecursionError for deep nesting.)
                self.failures += 1
                # The message names the failure class and the URL's host, never the body.
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                log.warning("JWKS fetch from %s failed, keeping the current keys: %s",
                            urllib.parse.urlsplit(self.url).hostname, self.last_error)
                return False
            kids = frozenset(str(k.get("kid")) for k in doc["keys"] if isinstance(k, dict) and k.get("kid") is not None)
            added, removed = sorted(kids - self._kids), sorted(self._kids - kids)
            self._digest, self._kids = digest, kids
            self.changes += 1
            self.last_error = None
        self._audit(added, removed, len(doc["keys"]))
        return True

    def _audit(self, added: list[str], removed: list[str], count: int) -> None:
        event = {"type": "key_management", "subtype": "jwks_changed", "result": "success", "action": "reload",
                 "resource": "tokens", "details": {"url": self.url, "keys": count, "added": added, "removed": removed}}
        try:
            self.runtime.audit_emit(event)
        except Exception:  # noqa: BLE001
            pass  # no audit section, or the queue refused it: the library's keys_reloaded record remains

    def on_unknown_kid(self) -> bool:
        """The hook ``rt.verify_token`` calls on an unknown kid. It never fetches and never
        waits (it may run on the event loop): it asks the background thread for one refetch
        and returns False, so the token at hand is refused. The thread makes at most one
        unknown-kid refetch per ``cooldown`` for the whole process: at once when the last one
        is older, else when the cooldown ends (however many unknown kids arrived in it)."""
        try:
            with self._state_lock:
                if self._unknown_pending:
                    return False  # already asked
                self._unknown_pending = True
            self._wake.set()
        except Exception:  # noqa: BLE001 - never into verify_token
            log.exception("JWKS unknown-kid hook failed")
        return False

    # ---- background ----------------------------------------------------------------------

    def _run(self) -> None:
        """The thread: a fetch every ``ttl`` (``retry`` after a failure) and the unknown-kid
        refetches ``on_unknown_kid`` asks for, each due ``cooldown`` after the previous one;
        any fetch starts the TTL again."""
        next_ttl = time.monotonic() + (self.ttl if self.last_error is None else self.retry)
        while not self._stop.is_set():
            try:
                with self._state_lock:
                    due = min(next_ttl, self._last_unknown + self.cooldown) if self._unknown_pending else next_ttl
                self._wake.wait(max(0.0, due - time.monotonic()))
                self._wake.clear()  # (before reading the state: a later ask sets it again)
                if self._stop.is_set():
                    return
                now = time.monotonic()
                with self._state_lock:
                    unknown = self._unknown_pending and now - self._last_unknown >= self.cooldown
                    if unknown:
                        self._unknown_pending = False
                        self._last_unknown = now
                        self.unknown_kid_refetches += 1
                if unknown or now >= next_ttl:
                    self.refresh()
                    next_ttl = time.monotonic() + (self.ttl if self.last_error is None else self.retry)
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one failure
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                log.error("JWKS refresher: unexpected %s, retrying in %ss", type(e).__name__, self.retry)
                next_ttl = time.monotonic() + self.retry

    def start(self, *, initial_fetch: bool = True) -> None:
        """Fetches once (unless ``initial_fetch`` is False), installs the unknown-kid hook and
        starts the background thread."""
        if self._thread is not None:
            return
        if initial_fetch:
            self.refresh()
        self.runtime._unknown_kid_hook = self.on_unknown_kid
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bitsec-jwks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread and removes the hook (the current keys stay)."""
        if getattr(self.runtime, "_unknown_kid_hook", None) == self.on_unknown_kid:
            self.runtime._unknown_kid_hook = None
        self._stop.set()
        self._wake.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(self.timeout + 1.0)


def jwks_lifespan(url: str, *, ttl: float = 3600.0, cooldown: float = 60.0, retry: float = 30.0,
                  timeout: float = 5.0, max_bytes: int = 1 << 20, attr: str = STATE_ATTR,
                  then: Callable[[FastAPI], Any] | None = None) -> Callable[[FastAPI], Any]:
    """An inner lifespan: ``FastAPI(lifespan=bitsec_lifespan(config, then=jwks_lifespan(url)))``.
    Starts a ``JWKSBackgroundRefresher`` for the runtime on ``app.state.<attr>`` (kept on
    ``app.state.bitsec_jwks``) and stops it at shutdown; ``then`` is the application's own
    inner lifespan."""
    _check_url(url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = getattr(app.state, attr)
        refresher = JWKSBackgroundRefresher(rt, url, ttl=ttl, cooldown=cooldown, retry=retry, timeout=timeout,
                                            max_bytes=max_bytes)
        await anyio.to_thread.run_sync(refresher.start)
        setattr(app.state, JWKS_STATE_ATTR, refresher)
        try:
            if then is not None:
                async with then(app):
                    yield
            else:
                yield
        finally:
            await anyio.to_thread.run_sync(refresher.stop)
            with contextlib.suppress(AttributeError):
                delattr(app.state, JWKS_STATE_ATTR)

    return lifespan


def bitsec_jwks_lifespan(config: Any, url: str, *, ttl: float = 3600.0, cooldown: float = 60.0,
                         retry: float = 30.0, timeout: float = 5.0, max_bytes: int = 1 << 20,
                         attr: str = STATE_ATTR, then: Callable[[FastAPI], Any] | None = None) -> Callable[[FastAPI], Any]:
    """``bitsec_lifespan(config)`` with the JWKS refresher of ``url`` running inside it."""
    return bitsec_lifespan(config, attr=attr, then=jwks_lifespan(url, ttl=ttl, cooldown=cooldown, retry=retry,
                                                                 timeout=timeout, max_bytes=max_bytes, attr=attr,
                                                                 then=then))
