"""The login guard for login endpoints: ``LoginGuard`` / ``LoginAttempts`` / ``LoginAttempt``."""
from __future__ import annotations

import hashlib
from typing import Iterable

from fastapi import HTTPException, Request

from .. import _abi
from ..ratelimit import LoginGuardDecision
from ..runtime import Runtime
from ._common import STATE_ATTR, ClientIP, _client_ip, get_runtime

# ---- the login guard -----------------------------------------------------------------------

class LoginAttempt:
    """One login attempt reserved by ``LoginAttempts.begin`` (already counted as a failure).
    End it with ``succeeded()`` after a successful login, ``failed()`` (the exception to
    raise) after a wrong password or second factor, or ``cancel()`` when it was neither (the
    password was right and the second factor is still due)."""

    __slots__ = ("rt", "account", "client", "decision", "_refunded")

    def __init__(self, rt: Runtime, account: str, client: str, decision: LoginGuardDecision) -> None:
        self.rt = rt
        self.account = account
        self.client = client
        self.decision = decision
        self._refunded = False

    def succeeded(self) -> None:
        """Refunds the attempt and clears the account's failures (the client's failures
        against other accounts stay). The attempt is refunded once: after ``cancel()`` (or a
        first ``succeeded()``) only the account is cleared."""
        ticket = 0 if self._refunded else self.decision.ticket
        self._refunded = True
        self.rt.login_guard_succeeded(self.account, self.client, ticket)

    def cancel(self) -> None:
        """Refunds the attempt on both keys without clearing anything; once (a second call,
        or one after ``succeeded()``, does nothing). A ticket is the attempt's instant in
        milliseconds: refunding one twice would take back a second failure of the same
        client from the same millisecond, another attempt's."""
        if self._refunded:
            return
        self._refunded = True
        self.rt.login_guard_cancel(self.account, self.client, self.decision)

    def failed(self, detail: str = "Invalid credentials", realm: str = "Bearer") -> HTTPException:
        """The exception for a failed attempt (nothing to record: it is already counted):
        401 with ``WWW-Authenticate``, or, when this failure starts the client's block or the
        account's back-off, 429 "Too many failed login attempts" with ``Retry-After``."""
        wait = self.decision.failure_retry_after
        if wait > 0:
            return HTTPException(status_code=429, detail="Too many failed login attempts",
                                 headers={"Retry-After": str(wait)})
        return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": realm})


class LoginAttempts:
    """The login guard bound to one request (what ``Depends(LoginGuard())`` gives)."""

    __slots__ = ("rt", "client")

    def __init__(self, rt: Runtime, client: str) -> None:
        self.rt = rt
        self.client = client

    def begin(self, account: str, tenant: str | None = None) -> LoginAttempt:
        """Reserves the attempt BEFORE the password check; raises 429 "Too many failed login
        attempts" with ``Retry-After`` when the client or the account is refused. ``tenant``:
        where account names are only unique within a tenant, the tenant the name is looked up
        in, so that namesakes in two tenants have two account counters (the name is counted as
        ``tenant:<n>:<tenant>:<name>``, ``n`` the tenant's length in UTF-8 bytes, folded by the
        library as a whole: case makes no difference in the tenant either). Pass it on every
        call or on none: a name typed as ``tenant:2:t1:alice`` on a call without a tenant is
        counted as alice of t1."""
        account = _account_key(account if not tenant else
                               f"tenant:{len(tenant.encode('utf-8', 'surrogatepass'))}:{tenant}:{account}")
        d = self.rt.login_guard_begin(account, self.client)
        if not d.allowed:
            raise HTTPException(status_code=429, detail="Too many failed login attempts", headers=d.headers())
        return LoginAttempt(self.rt, account, self.client, d)


def _account_key(account: str) -> str:
    """The name the login guard counts the attempt under: the name as typed (the library
    folds it, then hashes a long fold), with two exceptions the library cannot take. A lone
    surrogate (JSON can carry one) becomes U+FFFD. A name over
    ``BITSEC_LOGIN_GUARD_MAX_ACCOUNT_BYTES`` in UTF-8 is cut there, so every longer name
    counts under the account of its first 4,096 bytes: padding a name (with characters the
    fold removes, or any others) never makes a fresh account counter. An empty name is
    ``sha256:`` and the digest of nothing: one counter, no account has that name. These
    names were a 500, which counted nothing; they still count against the client."""
    try:
        data = account.encode("utf-8")
    except UnicodeEncodeError:
        account = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in account)
        data = account.encode("utf-8")
    if not data:
        return "sha256:" + hashlib.sha256(b"").hexdigest()
    if len(data) > _MAX_ACCOUNT_BYTES:
        # (at a character boundary: the bytes of a character the cut splits are dropped)
        return data[:_MAX_ACCOUNT_BYTES].decode("utf-8", "ignore")
    return account


_MAX_ACCOUNT_BYTES: int = _abi.BITSEC_LOGIN_GUARD_MAX_ACCOUNT_BYTES


class LoginGuard:
    """A dependency for login endpoints: the library's login guard (``rate_limits.login_guard``:
    failures per client address group and per account, each attempt reserved before the
    password check)::

        guard = LoginGuard(trusted_proxies=["10.0.0.0/8"])

        @app.post("/login")
        def login(body: LoginIn, attempts: LoginAttempts = Depends(guard)):
            attempt = attempts.begin(body.username)   # 429 + Retry-After when refused
            if not password_ok(...):
                raise attempt.failed()                # 401 (or 429 when this failure blocks)
            attempt.succeeded()
            ...

    The client is the peer's address, or ``X-Forwarded-For`` behind ``trusted_proxies`` (as
    ``ClientIP``). Use a ``def`` endpoint: with Redis, the guard's calls wait on the network.
    """

    def __init__(self, *, trusted_proxies: Iterable[str] | ClientIP = (), attr: str = STATE_ATTR) -> None:
        self.client_ip = ClientIP.of(trusted_proxies)
        self.attr = attr

    def __call__(self, request: Request) -> LoginAttempts:
        rt = get_runtime(request, self.attr)
        return LoginAttempts(rt, _client_ip(request.scope, self.client_ip) or "unknown")
