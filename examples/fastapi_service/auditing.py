"""One audit record per request outcome.

bitsec's ``AuditMiddleware`` records every 401, every 403 and every write. Two other writers
record some of the same outcomes: the library itself (with ``audit.automatic_events``, the
default, ``rt.check_permission`` records each denial it decides), and the service's endpoints
(a failed login as ``authentication``/``failed_login``, a refused account change as
``authorization``/``user_authority_denied``, ...). Counted twice, a 403 would make the
unauthorised-access alert fire at half the real number of attempts, and a failed login
recorded as a generic ``unauthorized`` would never reach the failed-login alert.

The library's own record of a permission denial is turned off in config.json
(``permissions.audit_denials: false``): the middleware's record of the 403 carries the same
resource, action and decision reason plus the request's context (request id, path, client),
so it is the one kept. ``ServiceAuditMiddleware`` is the library's middleware with one rule
added: it leaves out its own record of a request whose endpoint called ``common.audit`` with
``final=True`` (done automatically for an ``authentication`` or ``authorization`` event whose
result is ``denied`` or ``failure``: the endpoint's event is the more precise record).
"""
from __future__ import annotations

from typing import Any, Mapping

from starlette.requests import Request

from bitsec.fastapi import AuditMiddleware

#: request.state attribute set when an endpoint recorded the request's outcome itself
RECORDED = "refsvc_outcome_recorded"


def mark_recorded(request: Request) -> None:
    """The request's outcome is recorded: the middleware adds no record of its own."""
    setattr(request.state, RECORDED, True)


class ServiceAuditMiddleware(AuditMiddleware):
    """``AuditMiddleware`` without a second record of an outcome an endpoint recorded (see the
    module's text)."""

    def _event(self, scope: Any, state: Mapping[str, Any], status: int, rid: str) -> dict[str, Any] | None:
        if state.get(RECORDED):
            return None
        return super()._event(scope, state, status, rid)
