"""The service's token signing keys: RS256 by default, two of them, published as a JWK Set at
``/.well-known/jwks.json`` so that other services verify the tokens without any secret.

The configuration's ``tokens.keys`` names the keys (``pem`` files in the data directory);
``prepare_keys`` creates a missing RSA key (2048 bits, PKCS#8, mode 0600) once, and reads
which one signs from ``token-keys.json`` in the data directory (written by ``rotate``),
falling back to the configuration's ``tokens.issuing.kid``.

Rotation with two overlapping keys (``python examples/fastapi_service/serve.py rotate-keys``):
the key that does not sign now is replaced by a new one, and the new one signs from the next
start. The previous key stays configured and published, so every token it signed keeps
verifying until it expires; the key it replaced had signed nothing since the previous
rotation. Rotations must therefore be at least the refresh-token lifetime apart (7 days by
default): ``rotate`` refuses an earlier one unless forced (its tokens would stop verifying).

HS256 stays available: a ``tokens.keys`` entry with ``"alg": "HS256"`` and a ``secret`` (see
``config-hs256.json``); the JWK Set then has no key to publish (an HMAC secret is never
published) and is empty.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

STATE_FILE = "token-keys.json"
RSA_BITS = 2048  # RFC 7518 and bitsec: at least 2048; 3072 takes 5 times as long to generate
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


def _b64u(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _write_private(path: Path, pem: bytes, *, replace: bool = True) -> None:
    """Writes a key file (0600) atomically: a unique temporary file, then a rename over
    ``path`` (``replace``) or a link that fails when ``path`` exists (several worker processes
    starting at once: the first key written is the one every worker uses)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it first
    finally:
        tmp.unlink(missing_ok=True)


def new_rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _rsa_keys(tokens: dict[str, Any]) -> list[dict[str, Any]]:
    return [k for k in tokens.get("keys", []) if k.get("alg") in ASYMMETRIC
            and isinstance(k.get("pem"), dict) and "file" in k["pem"]]


def prepare_keys(tokens: dict[str, Any], data_dir: Path) -> None:
    """Creates the missing RSA key files of ``tokens.keys`` (their paths already resolved)
    and sets ``tokens.issuing.kid`` from ``token-keys.json`` when that names a configured key."""
    for k in _rsa_keys(tokens):
        path = Path(k["pem"]["file"])
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_private(path, new_rsa_pem(), replace=False)
    state = read_state(data_dir)
    kids = {k.get("kid") for k in tokens.get("keys", [])}
    if state.get("signing") in kids:
        tokens.setdefault("issuing", {})["kid"] = state["signing"]


def read_state(data_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((data_dir / STATE_FILE).read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def jwks(tokens: dict[str, Any]) -> dict[str, Any]:
    """The public JWK Set of the configured RSA keys (never a private member)."""
    out = []
    for k in _rsa_keys(tokens):
        key = serialization.load_pem_private_key(Path(k["pem"]["file"]).read_bytes(), password=None)
        pub = key.public_key()
        if not isinstance(pub, rsa.RSAPublicKey):
            continue
        nums = pub.public_numbers()
        out.append({"kty": "RSA", "kid": k["kid"], "alg": k["alg"], "use": "sig", "n": _b64u(nums.n), "e": _b64u(nums.e)})
    return {"keys": out}


def rotate(tokens: dict[str, Any], data_dir: Path, *, force: bool = False, now: float | None = None) -> str:
    """Replaces the RSA key that does not sign now with a new one and makes it the signing key
    (from the next start); returns its kid. Raises ``ValueError`` with fewer than two RSA keys,
    or when the previous rotation is more recent than the refresh-token lifetime (``force``
    skips that check: tokens of the replaced key stop verifying)."""
    keys = _rsa_keys(tokens)
    if len(keys) < 2:
        raise ValueError("rotation needs two RSA keys in tokens.keys")
    now = time.time() if now is None else now
    state = read_state(data_dir)
    ttl = int(tokens.get("issuing", {}).get("refresh_ttl_seconds", 604800))
    last = state.get("rotated_at")
    if not force and isinstance(last, (int, float)) and now - last < ttl:
        raise ValueError(f"the previous rotation was less than the refresh-token lifetime ({ttl} s) ago: "
                         "tokens signed by the key it would replace may still be live (--force to rotate anyway)")
    active = tokens.get("issuing", {}).get("kid") or keys[0]["kid"]
    retired = next(k for k in keys if k["kid"] != active)
    _write_private(Path(retired["pem"]["file"]), new_rsa_pem())
    tmp = data_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({"signing": retired["kid"], "previous": active, "rotated_at": int(now)}))
    os.chmod(tmp, 0o600)
    os.replace(tmp, data_dir / STATE_FILE)
    return str(retired["kid"])
