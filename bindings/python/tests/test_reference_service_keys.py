"""The reference service signs its tokens RS256 by default, publishes the public keys at
/.well-known/jwks.json (an independent verifier, PyJWT, accepts its tokens with them), and
rotates with two overlapping keys; HS256 remains a configuration away."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest

from refsvc_support import API, CONFIG, Service, bearer
from examples.fastapi_service.keys import read_state, rotate


def header(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


def verify_with_jwks(token: str, keys: dict[str, Any]) -> dict[str, Any]:
    kid = header(token)["kid"]
    [jwk] = [k for k in keys["keys"] if k["kid"] == kid]
    key = jwt.PyJWK(jwk).key
    return jwt.decode(token, key, algorithms=["RS256"], audience="erp-api", issuer="https://auth.bitcorp.example")


def test_rs256_tokens_verify_with_the_published_jwks(tmp_path: Path) -> None:
    s = Service(tmp_path)
    with s.client:
        token = s.token("alice")
        assert header(token)["alg"] == "RS256" and header(token)["kid"] == "svc-rs-1"
        r = s.client.get("/.well-known/jwks.json")
        assert r.status_code == 200 and "max-age" in r.headers["cache-control"]
        keys = r.json()
        assert [k["kid"] for k in keys["keys"]] == ["svc-rs-1", "svc-rs-2"]
        for k in keys["keys"]:
            assert set(k) == {"kty", "kid", "alg", "use", "n", "e"}  # no private member
            assert k["kty"] == "RSA" and k["alg"] == "RS256" and k["use"] == "sig"
        assert verify_with_jwks(token, keys)["sub"] == str(s.ids["alice"])
        # the private keys are files of the data directory, mode 0600
        for name in ("jwt-rs256-1.pem", "jwt-rs256-2.pem"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600


def test_rotation_keeps_the_previous_keys_tokens_valid(tmp_path: Path) -> None:
    s = Service(tmp_path)
    with s.client:
        old_token = s.token("alice")
        before = s.client.get("/.well-known/jwks.json").json()
    tokens = json.loads(CONFIG.read_text())["tokens"]
    for k in tokens["keys"]:
        k["pem"]["file"] = str(tmp_path / k["pem"]["file"])
    assert rotate(tokens, tmp_path, now=1_000_000) == "svc-rs-2"
    assert read_state(tmp_path)["signing"] == "svc-rs-2"
    # the service restarted on the same data directory
    from examples.fastapi_service import create_app
    from fastapi.testclient import TestClient
    app = create_app(CONFIG, f"sqlite:///{tmp_path / 'service.db'}")
    with TestClient(app) as client:
        after = client.get("/.well-known/jwks.json").json()
        kept, new = after["keys"]
        assert kept == before["keys"][0] and new["n"] != before["keys"][1]["n"]
        assert client.get(f"{API}/auth/me", headers=bearer(old_token)).status_code == 200  # still valid
        r = client.post(f"{API}/auth/login", json={"username": "alice", "password": "alice-password-1"})
        new_token = r.json()["access_token"]
        assert header(new_token)["kid"] == "svc-rs-2"
        assert verify_with_jwks(new_token, after)["sub"] == str(s.ids["alice"])
    # a second rotation within the refresh-token lifetime would cut off live tokens: refused
    tokens["issuing"]["kid"] = "svc-rs-2"
    with pytest.raises(ValueError, match="refresh-token lifetime"):
        rotate(tokens, tmp_path, now=1_000_000 + 3600)
    assert rotate(tokens, tmp_path, now=1_000_000 + 604800) == "svc-rs-1"
    app = create_app(CONFIG, f"sqlite:///{tmp_path / 'service.db'}")
    with TestClient(app) as client:  # svc-rs-1 was replaced: its tokens no longer verify
        assert client.get(f"{API}/auth/me", headers=bearer(old_token)).status_code == 401


def test_hs256_remains_an_option(tmp_path: Path) -> None:
    s = Service(tmp_path, config=CONFIG.parent / "config-hs256.json")
    with s.client:
        token = s.token("alice")
        assert header(token)["alg"] == "HS256"
        assert s.client.get(f"{API}/auth/me", headers=bearer(token)).status_code == 200
        assert s.client.get("/.well-known/jwks.json").json() == {"keys": []}  # a secret is never published
