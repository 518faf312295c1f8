"""``BearerAuth``: ``Authorization: Bearer`` tokens verified through the runtime."""
from __future__ import annotations

import anyio
from fastapi import HTTPException, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from ..errors import BackendUnavailableError, BitsecError
from ..tokens import ExpiredTokenError, TokenClaims, TokenError
from ._common import _AUTH_FAILURE, _CLAIMS, _NO_CLAIMS, STATE_ATTR, _unavailable, get_runtime
from .offload import _check_offload, offload_plan

# ---- bearer tokens -------------------------------------------------------------------------

def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bearer_challenge(realm: str | None, error: str | None = None, description: str | None = None,
                      scope: str | None = None) -> str:
    params = []
    if realm:
        params.append(f"realm={_quote(realm)}")
    if error:
        params.append(f"error={_quote(error)}")
    if description:
        params.append(f"error_description={_quote(description)}")
    if scope:
        params.append(f"scope={_quote(scope)}")
    return "Bearer" + (" " + ", ".join(params) if params else "")


def _bearer_credentials(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when absent or another scheme;
    "" for a Bearer header without a token."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


class BearerAuth(SecurityBase):
    """Verifies ``Authorization: Bearer <JWT>`` through ``rt.verify_token``; returns the
    ``TokenClaims`` (also kept on ``request.state.bitsec_claims`` for the other
    dependencies and the middlewares).

    - no token (no header, or another scheme): 401 ``WWW-Authenticate: Bearer`` without an
      error code (RFC 6750 section 3.1), detail "Not authenticated"; with ``auto_error=False``
      the dependency returns None instead (optional authentication);
    - ``Bearer`` with an empty token: 400 ``error="invalid_request"``;
    - a refused token: 401 ``error="invalid_token"``, detail "Token has expired" for an
      expired token and "Invalid token" for every other reason (the reason name goes to the
      audit trail, never to the client). With ``auto_error=False`` a refused token is still
      a 401: optional means "may be absent", not "may be forged";
    - the token store unreachable (revocation in Redis): 503 with ``Retry-After``.

    The verify runs inline unless the runtime's tokens may wait (revocation in Redis, a slow
    algorithm: ``offload_plan``); ``offload="always"``: always in the thread pool.
    ``verify(request)`` is the same work as a plain sync method.
    """

    def __init__(self, *, auto_error: bool = True, realm: str | None = None, scheme_name: str | None = None,
                 description: str | None = None, attr: str = STATE_ATTR, offload: str = "auto") -> None:
        self.model = HTTPBearerModel(bearerFormat="JWT", description=description)
        self.scheme_name = scheme_name or "BearerAuth"
        self.auto_error = auto_error
        self.realm = realm
        self.attr = attr
        self.offload = _check_offload(offload)

    def _fail(self, request: Request, status: int, detail: str, failure: str, error: str | None,
              description: str | None = None) -> HTTPException:
        setattr(request.state, _AUTH_FAILURE, failure)
        return HTTPException(status_code=status, detail=detail,
                             headers={"WWW-Authenticate": _bearer_challenge(self.realm, error, description)})

    def verify(self, request: Request) -> TokenClaims | None:
        """The dependency's work, callable from other dependencies (sync: run it in a thread)."""
        cached = getattr(request.state, _CLAIMS, _NO_CLAIMS)
        if cached is not _NO_CLAIMS and cached is not None:
            return cached  # type: ignore[return-value]
        token = _bearer_credentials(request)
        if token is None:
            if not self.auto_error:
                return None
            raise self._fail(request, 401, "Not authenticated", "missing", None)
        if not token:
            raise self._fail(request, 400, "Invalid token", "malformed", "invalid_request",
                             "The Authorization header has no token")
        rt = get_runtime(request, self.attr)
        try:
            claims = rt.verify_token(token)
        except ExpiredTokenError:
            raise self._fail(request, 401, "Token has expired", "expired", "invalid_token",
                             "The access token expired") from None
        except TokenError as e:
            raise self._fail(request, 401, "Invalid token", e.reason, "invalid_token",
                             "The access token is invalid") from None
        except BackendUnavailableError:
            raise _unavailable() from None
        except BitsecError as e:  # e.g. a token the library refuses to read at all
            raise self._fail(request, 401, "Invalid token", type(e).__name__, "invalid_token",
                             "The access token is invalid") from None
        setattr(request.state, _CLAIMS, claims)
        return claims

    def _offloads(self, request: Request) -> bool:
        """Whether verifying this request's token may wait (no token, or claims already
        verified: nothing to wait for)."""
        if getattr(request.state, _CLAIMS, None) is not None or not _bearer_credentials(request):
            return False
        return offload_plan(get_runtime(request, self.attr), self.offload).offloads("tokens")

    async def __call__(self, request: Request) -> TokenClaims | None:
        if self._offloads(request):
            return await anyio.to_thread.run_sync(self.verify, request)
        return self.verify(request)
