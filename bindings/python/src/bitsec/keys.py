"""Signing keys for the ``tokens`` section: new private keys and public JWKs (JWK Sets).

Everything cryptographic runs in libbitsec (OpenSSL): key generation
(``bitsec_token_key_generate``) and the public half of a PEM key
(``bitsec_token_key_public_jwk``). The JWK thumbprint (RFC 7638) is the SHA-256 of the
canonical JWK the library returns.
"""
from __future__ import annotations

import base64
import ctypes
import hashlib
import json
from ctypes import c_size_t
from typing import Any

from . import _native as N
from .errors import InvalidArgumentError

_generate = N.declare("bitsec_token_key_generate")
_public_jwk = N.declare("bitsec_token_key_public_jwk")

#: The key types ``generate_signing_key`` accepts and the JWS algorithm each is used with.
KEY_TYPES: dict[str, str] = {
    "RSA-2048": "RS256", "RSA-3072": "RS256", "RSA-4096": "RS256",
    "P-256": "ES256", "P-384": "ES384", "P-521": "ES512",
    "Ed25519": "EdDSA",
}

#: HMAC algorithms and the secret size each gets (the hash size, RFC 7518 section 3.2).
HMAC_SECRET_BYTES: dict[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}

_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def generate_signing_key(key_type: str = "Ed25519") -> str:
    """A new private key of ``key_type`` (a name of ``KEY_TYPES``) as unencrypted PKCS#8 PEM,
    the form a tokens key's ``pem`` reads. Store it in a file only its owner can read."""
    if key_type not in KEY_TYPES:
        raise InvalidArgumentError(f"unknown key type {key_type!r} (expected one of {', '.join(KEY_TYPES)})")
    t = key_type.encode()
    buf = ctypes.create_string_buffer(8192)
    n = c_size_t()
    try:
        N.check(_generate(t, len(t), buf, len(buf), ctypes.byref(n)))
        return buf.raw[: n.value].decode("ascii")
    finally:
        ctypes.memset(buf, 0, len(buf))


def _canonical_jwk(pem: str | bytes) -> bytes:
    data = pem.encode() if isinstance(pem, str) else bytes(pem)
    buf = ctypes.create_string_buffer(2048)
    n = c_size_t()
    N.check(_public_jwk(data, len(data), buf, len(buf), ctypes.byref(n)))
    return buf.raw[: n.value]


def jwk_thumbprint(pem: str | bytes) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of a PEM key's public half."""
    digest = hashlib.sha256(_canonical_jwk(pem)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def public_jwk(pem: str | bytes, *, kid: str | None = None, alg: str | None = None) -> dict[str, Any]:
    """The public JWK of a PEM key (private key, public key or certificate), with ``kid``
    (default: the RFC 7638 thumbprint), ``alg`` and ``"use": "sig"``. Never contains private
    members. ``alg`` defaults to the curve's algorithm for EC keys and EdDSA for Ed25519;
    RSA keys need it (RS256 or PS256 cannot be guessed safely)."""
    canonical = _canonical_jwk(pem)
    jwk: dict[str, Any] = json.loads(canonical)
    kty = jwk["kty"]
    if kty == "RSA":
        if alg is None:
            raise InvalidArgumentError("an RSA key needs an explicit alg (RS256, RS384, RS512, PS256, PS384 or PS512)")
        if alg not in _RSA_ALGS:
            raise InvalidArgumentError(f"alg {alg} does not fit an RSA key")
    elif kty == "EC":
        want = _EC_ALGS[jwk["crv"]]
        if alg is not None and alg != want:
            raise InvalidArgumentError(f"alg {alg} does not fit a {jwk['crv']} key (it signs {want})")
        alg = want
    else:
        if alg is not None and alg != "EdDSA":
            raise InvalidArgumentError(f"alg {alg} does not fit an Ed25519 key (it signs EdDSA)")
        alg = "EdDSA"
    if kid is None:
        kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")
    return {"kid": kid, "alg": alg, "use": "sig", **jwk}


__all__ = ["KEY_TYPES", "HMAC_SECRET_BYTES", "generate_signing_key", "public_jwk", "jwk_thumbprint"]
