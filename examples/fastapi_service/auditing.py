"""One audit record per request outcome, and the service's rate-limit categories.

The service runs on bitsec's ``GuardMiddleware``, which records (as ``AuditMiddleware``
does) every 401, every 403 and every write. Two other writers
record some of the same outcomes: the library itself (with ``audit.automatic_events``, the
default, ``rt.check_permission`` records each denial it decides), and the service's endpoints
(a failed login as ``authentication``/``failed_login``, a refused account change as
``authorization``/``user_authority_denied``, ...). Counted twice, a 403 would make the
unauthorised-access alert fire at half the real number of attempts, and a failed login
recorded as a generic ``unauthorized`` would never reach the failed-login alert.

The library's own record of a permission denial is turned off in config.json
(``permissions.audit_denials: false``): the middleware's record of the 403 carries the same
resource, action and decision reason plus the request's context (request id, path, client),
so it is the one kept. ``ServiceGuardMiddleware`` is the library's guard with one rule
added to its audit trail: it leaves out its own record of a request whose endpoint called ``common.audit`` with
``final=True`` (done automatically for an ``authentication`` or ``authorization`` event whose
result is ``denied`` or ``failure``: the endpoint's event is the more precise record).
"""
from __future__ import annotations

from typing import Any, Mapping

from starlette.requests import Request

from bitsec.fastapi import DEFAULT_PATH_CATEGORIES, GuardMiddleware

#: request.state attribute set when an endpoint recorded the request's outcome itself
RECORDED = "refsvc_outcome_recorded"


def mark_recorded(request: Request) -> None:
    """The request's outcome is recorded: the middleware adds no record of its own."""
    setattr(request.state, RECORDED, True)


#: Paths outside every rate limit: a load balancer's health probe and the metrics scraper
#: poll them, and they reveal nothing a limit would protect.
UNLIMITED = frozenset({"/health", "/metrics"})


def service_categories(method: str, path: str) -> str | None:
    """The rate-limit category of a request (``GuardMiddleware(categorize=...)``): none for
    ``UNLIMITED`` paths, else the library's defaults (``DEFAULT_PATH_CATEGORIES``: a path
    with an ``auth`` segment -> ``auth``, a POST under ``artifacts`` -> ``upload``, ``infer``
    -> ``inference``, everything else -> ``default``)."""
    if path in UNLIMITED:
        return None
    return DEFAULT_PATH_CATEGORIES(method, path)


class ServiceGuardMiddleware(GuardMiddleware):
    """``GuardMiddleware`` without a second record of an outcome an endpoint recorded (see the
    module's text). (Requests refused for their token, 400 / 401, are rate limited by the
    guard itself, keyed by the client's address: a client guessing or replaying tokens, or
    polling a protected endpoint without one, is answered 429 once over its limit.)"""

    def _event(self, scope: Any, state: Mapping[str, Any], status: int, rid: str, *rest: Any,
               **read: Any) -> str | None:
        if state.get(RECORDED):
            return None
        return super()._event(scope, state, status, rid, *rest, **read)
