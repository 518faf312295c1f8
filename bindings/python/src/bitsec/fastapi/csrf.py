"""CSRF protection for FastAPI routes that authenticate with cookies (a session cookie).

``CSRFProtect`` is a dependency: on an unsafe method (anything but GET, HEAD, OPTIONS,
TRACE) it checks the ``Origin`` / ``Sec-Fetch-Site`` headers against the runtime's
``csrf.allowed_origins``, then the CSRF token sent in the ``X-CSRF-Token`` header or the
``csrf_token`` form field, bound to the request's session. A refused request is a 403 whose
detail names the reason: ``origin_not_allowed``, ``origin_missing``, ``cross_site_request``,
``csrf_session_missing``, ``csrf_token_missing``, ``csrf_token_malformed``,
``csrf_token_invalid``, ``csrf_token_expired``, ``csrf_token_mismatch``.

Two token modes (OWASP CSRF Prevention Cheat Sheet):

- ``"synchronizer"`` (default): the page carries a token made with
  ``rt.csrf_token_issue(session_id)`` (render it into forms, or hand it to the page's
  script); it is valid for that session only.
- ``"double_submit"``: stateless; ``set_csrf_cookie(response, rt, binding)`` sets a cookie
  (``__Host-csrf``, Secure, Path=/, SameSite=Strict, readable by the page's script) whose
  value the page repeats in the header; the value is signed and bound to the session
  binding, so a cookie planted by a sibling subdomain does not pass.

The session identifier comes from ``session_id``: a callable taking the ``Request`` (sync or
async) and returning the identifier (``str``/``bytes``) or None when the request has no
session. It composes with any cookie session dependency: let that dependency run first (list
it before ``CSRFProtect`` in ``dependencies=[...]``, or make ``session_id`` read what it put on
``request.state``).

Routes authenticated with ``Authorization: Bearer`` tokens do not need this: a browser never
attaches such a header on its own, so a cross-site request cannot carry it. Only routes that
a cookie authenticates need ``CSRFProtect``.
"""
from __future__ import annotations

import inspect
import urllib.parse
from typing import Any, Awaitable, Callable, Union, cast

from fastapi import HTTPException, Request, Response

from ..csrf import CSRFDecision
from ._common import STATE_ATTR, get_runtime

__all__ = ["CSRFProtect", "set_csrf_cookie", "CSRF_HEADER", "CSRF_FORM_FIELD", "CSRF_COOKIE", "SAFE_METHODS"]

CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"
CSRF_COOKIE = "__Host-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Where the decision of a refused request is kept for middlewares: ``request.state.bitsec_csrf``.
_STATE = "bitsec_csrf"

SessionIdFn = Callable[[Request], Union[str, bytes, None, Awaitable[Union[str, bytes, None]]]]


class CSRFProtect:
    """The dependency (see the module's documentation): ``Depends(CSRFProtect(session_id=...))``.

    ``mode``: ``"synchronizer"`` or ``"double_submit"``; ``header``/``form_field``: where the
    token is read (the header first); ``cookie``: the double-submit cookie's name;
    ``check_origin``: False skips the Origin / Sec-Fetch-Site check (not recommended);
    ``forms``: False never reads a form body (only the header)."""

    def __init__(self, session_id: SessionIdFn, *, mode: str = "synchronizer", header: str = CSRF_HEADER,
                 form_field: str = CSRF_FORM_FIELD, cookie: str = CSRF_COOKIE, check_origin: bool = True,
                 forms: bool = True, attr: str = STATE_ATTR) -> None:
        if mode not in ("synchronizer", "double_submit"):
            raise ValueError("mode must be 'synchronizer' or 'double_submit'")
        self.session_id = session_id
        self.mode = mode
        self.header = header
        self.form_field = form_field
        self.cookie = cookie
        self.check_origin = check_origin
        self.forms = forms
        self.attr = attr

    def _refuse(self, request: Request, reason: str) -> HTTPException:
        setattr(request.state, _STATE, reason)
        return HTTPException(status_code=403, detail=reason)

    async def _token(self, request: Request) -> str | None:
        value = request.headers.get(self.header)
        if value:
            return value
        if not self.forms:
            return None
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            # Parsed here with the standard library (no python-multipart needed); Starlette
            # keeps the body, so the endpoint still reads it.
            return _form_value((await request.body()).decode("latin-1"), self.form_field)
        if ctype == "multipart/form-data":
            try:
                form = await request.form()
            except (AssertionError, RuntimeError, ImportError):  # python-multipart not installed
                return None
            v = form.get(self.form_field)
            if isinstance(v, str):
                return v
        return None

    async def __call__(self, request: Request) -> None:
        method = request.method.upper()
        if method in SAFE_METHODS:
            return
        rt = get_runtime(request, self.attr)
        if self.check_origin:
            d: CSRFDecision = rt.csrf_origin_check(method, request.headers.get("origin"),
                                                   request.headers.get("sec-fetch-site"))
            if not d:
                raise self._refuse(request, d.reason)
        raw: Any = self.session_id(request)
        if inspect.isawaitable(raw):
            raw = await raw
        sid = cast("str | bytes | None", raw)
        if not sid:
            raise self._refuse(request, "csrf_session_missing")
        submitted = await self._token(request)
        if self.mode == "synchronizer":
            d = rt.csrf_token_verify(sid, submitted)
        else:
            d = rt.csrf_cookie_verify(sid, request.cookies.get(self.cookie), submitted)
        if not d:
            raise self._refuse(request, d.reason)


def _form_value(body: str, name: str) -> str | None:
    """The first value of ``name`` in a urlencoded body, decoded as ``parse_qs`` decodes it,
    without parsing the other fields (``parse_qs`` raises past ``max_num_fields``: a form with
    more fields was a 500)."""
    for pair in body.split("&"):
        key, _, value = pair.partition("=")
        if urllib.parse.unquote_plus(key) == name:
            return urllib.parse.unquote_plus(value)
    return None


def set_csrf_cookie(response: Response, rt: Any, binding: str | bytes, *, name: str = CSRF_COOKIE,
                    samesite: str = "strict", max_age: int | None = None) -> str:
    """Sets the signed double-submit cookie for ``binding`` on ``response`` and returns its
    value (also for the page). The cookie is ``Secure``, ``Path=/`` (required by the
    ``__Host-`` prefix) and not HttpOnly: the page's script reads it to repeat it in the
    header. ``max_age`` defaults to the session cookie's lifetime (a browser-session cookie)."""
    value = str(rt.csrf_cookie_issue(binding))
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=False, samesite=samesite)  # type: ignore[arg-type]
    return value
