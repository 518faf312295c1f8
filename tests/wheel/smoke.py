"""Runs inside a fresh venv that has only the bitsec wheel installed (tests/wheel/run.sh):
no repository on sys.path, no BITSEC_LIBRARY. Opens a runtime, signs and verifies a token,
and sends one request through a FastAPI app."""
from __future__ import annotations

import os
import sys

assert "BITSEC_LIBRARY" not in os.environ, "the smoke test must use the bundled library"

import bitsec  # noqa: E402

here = os.path.dirname(bitsec.__file__)
assert bitsec.library_path() == os.path.join(here, "_lib", "libbitsec.so.1"), bitsec.library_path()
# the guard's compiled steps, built by the wheel for CPython's limited API, load from the wheel
from bitsec import _accel  # noqa: E402

assert _accel.SPEEDUPS is not None and _accel.SPEEDUPS.__file__.startswith(here), "bitsec._speedups did not load"
assert "site-packages" in here, here
for p in sys.path:
    assert not os.path.exists(os.path.join(p, "Package.swift")), f"the repository is on sys.path: {p}"

key = bitsec.random_bytes(32).hex()
config = {"allow_inline_secrets": True,
          "tokens": {"keys": [{"kid": "k1", "alg": "HS256", "secret": {"value": key, "encoding": "hex"}}]}}
with bitsec.Runtime(config) as rt:
    token = rt.sign_token({"sub": "alice", "exp": 4102444800})
    claims = rt.verify_token(token)
    assert claims["sub"] == "alice"
    try:
        rt.verify_token(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    except bitsec.TokenError as e:
        assert e.reason == "bad_signature", e.reason
    else:
        raise AssertionError("a tampered token verified")

from fastapi import Depends, FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from bitsec.fastapi import BearerAuth, bitsec_lifespan  # noqa: E402

app = FastAPI(lifespan=bitsec_lifespan(config))
auth = BearerAuth()


@app.get("/me")
def me(claims: bitsec.TokenClaims = Depends(auth)) -> dict[str, str]:
    return {"sub": claims["sub"]}


with TestClient(app) as client:
    ok = client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json() == {"sub": "alice"}, (ok.status_code, ok.text)
    denied = client.get("/me")
    assert denied.status_code == 401, denied.status_code

print(f"wheel smoke: bitsec {bitsec.__version__} from {here}: runtime, sign/verify and one FastAPI request ok")
