"""Every public name of ``bitsec.fastapi`` stays importable from ``bitsec.fastapi``.

The list is the module's public surface as it was when it was a single file (its ``__all__``
plus the other public module-level names), so that splitting it into a package (one module
per concern) breaks no ``from bitsec.fastapi import ...`` of an application."""
from __future__ import annotations

import importlib

import pytest

#: ``__all__`` of the single-file module.
OLD_ALL = (
    "STATE_ATTR", "bitsec_lifespan", "get_runtime", "BearerAuth", "RequirePermission", "require_permission",
    "ClientIP", "RateLimit", "RateLimitMiddleware", "adr007_category", "AuditMiddleware",
    "SecurityHeadersMiddleware", "DEFAULT_SECURITY_HEADERS", "MFAEnrollment", "mfa_enroll", "verify_mfa_code",
    "MFACode", "request_id", "OffloadPlan", "offload_plan", "run_native", "OFFLOAD_MODES",
    "RequestLimitsMiddleware", "body_limit", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_BODY_TIMEOUT",
    "LoginGuard", "LoginAttempts", "LoginAttempt",
)
#: Public module-level names of the single-file module that were not in ``__all__``.
OLD_OTHER_PUBLIC = ("ContextFn", "OPERATIONS", "SLOW_VERIFY_ALGS", "UNMATCHED_RESOURCE", "log")


@pytest.mark.parametrize("name", OLD_ALL + OLD_OTHER_PUBLIC)
def test_public_name_importable(name: str) -> None:
    mod = importlib.import_module("bitsec.fastapi")
    assert getattr(mod, name, None) is not None, name


def test_all_keeps_every_old_name() -> None:
    mod = importlib.import_module("bitsec.fastapi")
    missing = [n for n in OLD_ALL if n not in mod.__all__]
    assert missing == []
    # and every name in __all__ resolves (a star import does not fail)
    assert [n for n in mod.__all__ if not hasattr(mod, n)] == []


def test_star_import() -> None:
    ns: dict[str, object] = {}
    exec("from bitsec.fastapi import *", ns)  # noqa: S102 - the import under test
    assert set(OLD_ALL) <= set(ns)


def test_values_unchanged() -> None:
    import bitsec.fastapi as f

    assert f.STATE_ATTR == "bitsec"
    assert f.OFFLOAD_MODES == ("auto", "always")
    assert f.DEFAULT_MAX_BODY_BYTES == 1 << 20
    assert f.DEFAULT_BODY_TIMEOUT == 30.0
    assert f.UNMATCHED_RESOURCE == "(no route)"
    assert f.adr007_category("POST", "/api/v1/artifacts/x") == "upload"
    assert f.adr007_category("GET", "/auth/login") == "auth"
    assert f.adr007_category("GET", "/api/infer") == "inference"
    assert f.adr007_category("GET", "/api/x") == "default"
    assert f.DEFAULT_SECURITY_HEADERS["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in f.DEFAULT_SECURITY_HEADERS["Content-Security-Policy"]
