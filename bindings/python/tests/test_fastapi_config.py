"""The HTTP layer's application policy as configuration: path categories and security
headers (the CSP first), with their documented defaults."""
from __future__ import annotations

import warnings

import pytest
from fastapi import FastAPI

with warnings.catch_warnings():  # starlette's TestClient announces a move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from bitsec.fastapi import (DEFAULT_CSP, DEFAULT_PATH_CATEGORIES, DEFAULT_SECURITY_HEADERS, CategoryRule,
                            HTTPPolicy, PathCategories, SecurityHeadersMiddleware, adr007_category)


def test_default_categories_are_the_documented_rules() -> None:
    for method, path, want in [("GET", "/auth/login", "auth"), ("POST", "/api/v1/auth", "auth"),
                               ("POST", "/api/artifacts/1", "upload"), ("GET", "/api/artifacts/1", "default"),
                               ("POST", "/v1/inference", "inference"), ("GET", "/infer", "inference"),
                               ("GET", "/api/authority", "default"), ("GET", "/", "default")]:
        assert DEFAULT_PATH_CATEGORIES(method, path) == want, (method, path)
        assert adr007_category(method, path) == want
    assert DEFAULT_PATH_CATEGORIES.categories == {"auth", "upload", "inference", "default"}


def test_categories_from_configuration_first_match_wins() -> None:
    cats = PathCategories.from_config([
        {"category": "upload", "path_prefix": "/api/v1/files", "methods": ["post", "PUT"]},
        {"category": "auth", "segment": "login"},
        {"category": "heavy", "segment_prefix": "report", "path_prefix": "/api/"},
    ], default="general")
    assert cats("POST", "/api/v1/files/7") == "upload"
    assert cats("GET", "/api/v1/files/7") == "general"
    assert cats("POST", "/login") == "auth"
    assert cats("GET", "/api/reports/q3") == "heavy"
    assert cats("GET", "/reports/q3") == "general"  # path_prefix must hold too
    assert cats.categories == {"upload", "auth", "heavy", "general"}


@pytest.mark.parametrize("bad", [
    {"segment": "auth"},                              # no category
    {"category": "auth"},                             # no condition
    {"category": "auth", "segment": "a", "regex": ".*"},  # unknown key
])
def test_invalid_rule_is_refused_when_built(bad: dict) -> None:
    with pytest.raises(ValueError):
        PathCategories.from_config([bad])


def test_policy_unknown_key_and_types_refused() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        HTTPPolicy.from_mapping({"content_security_policy": "x"})
    with pytest.raises(ValueError):
        HTTPPolicy.from_mapping({"csp": 3})
    with pytest.raises(ValueError):
        HTTPPolicy.from_mapping({"security_headers": ["X-Frame-Options"]})
    with pytest.raises(ValueError):
        CategoryRule("")


def test_policy_defaults() -> None:
    p = HTTPPolicy.from_mapping(None)
    assert p.headers() == {k.lower(): v for k, v in DEFAULT_SECURITY_HEADERS.items()}
    assert p.headers()["content-security-policy"] == DEFAULT_CSP
    assert p.categories("GET", "/auth/x") == "auth"
    assert HTTPPolicy.from_mapping({"default_category": "other"}).categories("GET", "/x") == "other"


def _client(**kwargs: object) -> TestClient:
    app = FastAPI()

    @app.get("/x")
    def x() -> dict:
        return {}

    app.add_middleware(SecurityHeadersMiddleware, **kwargs)
    return TestClient(app)


def test_headers_middleware_csp_and_policy_from_configuration() -> None:
    r = _client().get("/x")
    assert r.headers["content-security-policy"] == DEFAULT_CSP
    r = _client(csp="default-src 'none'").get("/x")
    assert r.headers["content-security-policy"] == "default-src 'none'"
    assert r.headers["x-frame-options"] == "DENY"
    r = _client(csp="").get("/x")
    assert "content-security-policy" not in r.headers
    policy = HTTPPolicy.from_mapping({"csp": "default-src 'self' data:",
                                      "security_headers": {"Strict-Transport-Security": None, "X-Extra": "1"}})
    r = _client(policy=policy).get("/x")
    assert r.headers["content-security-policy"] == "default-src 'self' data:"
    assert "strict-transport-security" not in r.headers
    assert r.headers["x-extra"] == "1"
    # explicit arguments win over the policy
    r = _client(policy=policy, csp="default-src 'none'", headers={"X-Extra": None}).get("/x")
    assert r.headers["content-security-policy"] == "default-src 'none'"
    assert "x-extra" not in r.headers
