"""MFA building blocks: ``mfa_enroll``, ``verify_mfa_code`` and the ``MFACode`` step-up dependency."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from fastapi import HTTPException, Request

from .. import _abi
from ..errors import BackendUnavailableError, BitsecError
from ..runtime import Runtime
from ..tokens import TokenClaims
from ..totp import TOTPDecision, totp_qr_png
from ._common import _AUTH_FAILURE, _unavailable, get_runtime
from .bearer import BearerAuth, _bearer_challenge

# ---- MFA -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MFAEnrollment:
    """A new TOTP enrolment: store ``sealed`` (the secret encrypted for the user by bitsec);
    show ``uri`` / ``qr_png`` once. ``qr_data_uri`` is the PNG as a ``data:`` URI."""

    sealed: str
    uri: str
    qr_png: bytes | None

    @property
    def qr_data_uri(self) -> str | None:
        if self.qr_png is None:
            return None
        import base64
        return "data:image/png;base64," + base64.b64encode(self.qr_png).decode("ascii")


def mfa_user(claims: TokenClaims) -> str:
    """The user a token's TOTP secret is sealed for and its MFA state (the last accepted step,
    the failure count) is kept under: the token's ``sub``, or, when the token names a tenant
    (``tenant_id``, else ``tenant``), ``tenant:<n>:<tenant>:user:<sub>`` (``n``: the tenant's
    length in UTF-8 bytes, as the rate limits key a user), so that namesakes in two tenants
    are two users: one cannot make the other's code a replay or throttle the other with
    their own failures. ``sha256:<hex>`` of that when over ``BITSEC_TOTP_MAX_USER_BYTES``.
    A token without a tenant whose ``sub`` starts with ``tenant:``, ``sha256:`` or ``user:``
    is ``user:<sub>``, so that no ``sub`` can be another user's qualified name.
    Enrol with the same value (``mfa_enroll(rt, mfa_user(claims), claims.subject)``: the
    account named in the authenticator app is the third argument, which may not contain
    ``:``); ``MFACode`` verifies with it by default."""
    sub = claims.subject or ""
    tenant = claims.tenant_id
    if not tenant or type(tenant) is not str:
        # (a sub that reads as the other forms is kept apart from them: "user:" before it)
        return "user:" + sub if sub.startswith(("tenant:", "sha256:", "user:")) else sub
    user = f"tenant:{len(tenant.encode('utf-8', 'surrogatepass'))}:{tenant}:user:{sub}"
    data = user.encode("utf-8", "surrogatepass")
    if len(data) > _MAX_USER_BYTES:
        return "sha256:" + hashlib.sha256(data).hexdigest()
    return user


_MAX_USER_BYTES: int = _abi.BITSEC_TOTP_MAX_USER_BYTES


def mfa_enroll(rt: Runtime, user: str, account: str | None = None, *, qr: bool = True) -> MFAEnrollment:
    """``rt.totp_enroll(user, account)`` plus the QR code PNG (needs the ``qr`` extra;
    ``qr=False`` skips it). Sync: call it from a ``def`` endpoint."""
    e = rt.totp_enroll(user, account)
    return MFAEnrollment(e.sealed, e.uri, totp_qr_png(e.uri) if qr else None)


def verify_mfa_code(rt: Runtime, sealed: str, code: str, user: str) -> TOTPDecision:
    """Verifies a TOTP code against the user's sealed secret (replays and throttling in
    bitsec). Returns the accepted decision; raises ``HTTPException``: 401 "Invalid MFA code"
    (wrong or malformed code, or a sealed secret that does not open for this user), 401
    "MFA code already used" (replay), 429 "Too many MFA attempts" with ``Retry-After``
    (throttled), 503 when the state backend is unreachable. The 401s carry
    ``WWW-Authenticate: Bearer error="insufficient_user_authentication"`` (RFC 9470, the
    step-up authentication challenge)."""
    try:
        d = rt.totp_verify_sealed(sealed, code, user)
    except BackendUnavailableError:
        raise _unavailable() from None
    except BitsecError:
        raise _mfa_failed("Invalid MFA code") from None
    if d:
        return d
    if d.reason == "throttled":
        raise HTTPException(status_code=429, detail="Too many MFA attempts",
                            headers={"Retry-After": str(max(1, d.retry_after))})
    if d.reason == "replayed":
        raise _mfa_failed("MFA code already used")
    raise _mfa_failed("Invalid MFA code")


def _mfa_failed(detail: str, realm: str | None = None) -> HTTPException:
    """A 401 for a missing or refused second factor: RFC 9470's step-up challenge (every 401
    carries ``WWW-Authenticate``)."""
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": _bearer_challenge(
        realm, "insufficient_user_authentication", "A valid one-time code is required")})


class MFACode:
    """A step-up dependency: the authenticated user (``bearer``) must send a valid TOTP code
    in the ``header`` (default ``X-MFA-Code``); ``sealed_secret(request, claims)`` returns the
    user's sealed secret (or None when the user has not enrolled: 403 "MFA not enrolled").
    ``user(claims)`` is the user the secret was sealed for (default ``mfa_user``: the ``sub``,
    qualified by the token's tenant when it names one). Returns the claims. A plain ``def``
    dependency (FastAPI's thread pool): ``sealed_secret`` is your code and may query a
    database."""

    def __init__(self, sealed_secret: Callable[[Request, TokenClaims], str | None], *,
                 bearer: BearerAuth | None = None, header: str = "X-MFA-Code",
                 user: Callable[[TokenClaims], str] = mfa_user) -> None:
        self.sealed_secret = sealed_secret
        self.bearer = bearer or BearerAuth()
        self.header = header
        self.user = user

    def __call__(self, request: Request) -> TokenClaims:
        claims = self.bearer.verify(request)
        if claims is None or not claims.subject:
            raise self.bearer._fail(request, 401, "Not authenticated", "missing", None)
        sealed = self.sealed_secret(request, claims)
        if not sealed:
            raise HTTPException(status_code=403, detail="MFA not enrolled")
        code = request.headers.get(self.header)
        if not code:
            setattr(request.state, _AUTH_FAILURE, "mfa_required")
            raise _mfa_failed("MFA code required", self.bearer.realm)
        try:
            verify_mfa_code(get_runtime(request, self.bearer.attr), sealed, code, self.user(claims))
        except HTTPException as e:
            if e.status_code == 401:
                setattr(request.state, _AUTH_FAILURE, "mfa_failed")
            raise
        return claims
