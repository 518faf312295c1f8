"""tokens.require_kid through the Python binding: a token without kid is refused with
MissingKeyIdError (reason missing_kid), even when the only key would verify it."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

import bitsec
from bitsec import MissingKeyIdError

SECRET = "0123456789abcdef0123456789abcdef"


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256(header: dict) -> str:
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps({"sub": "u1", "exp": int(time.time()) + 600}).encode())
    return f"{h}.{p}.{b64(hmac.new(SECRET.encode(), f'{h}.{p}'.encode(), hashlib.sha256).digest())}"


def runtime(**extra: object) -> bitsec.Runtime:
    return bitsec.Runtime({"allow_inline_secrets": True,
                           "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET}}], **extra}})


def test_require_kid() -> None:
    no_kid = hs256({"alg": "HS256", "typ": "JWT"})
    with runtime() as rt:
        assert rt.verify_token(no_kid)["sub"] == "u1"  # default: the only key applies
        assert rt.describe()["sections"]["tokens"]["require_kid"] is False
    with runtime(require_kid=True) as rt:
        with pytest.raises(MissingKeyIdError) as e:
            rt.verify_token(no_kid)
        assert e.value.reason == "missing_kid"
        assert rt.verify_token(hs256({"alg": "HS256", "kid": "hs"}))["sub"] == "u1"
