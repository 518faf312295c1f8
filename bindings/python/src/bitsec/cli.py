"""The ``bitsec`` command line (also ``python -m bitsec``).

Exit statuses, for every command: 0 success (a valid configuration, a verified token, an
intact trail); 1 a negative answer (an invalid configuration, a refused token or field
token, a tampered trail); 2 a usage error or a failure (unreadable file, missing extra,
a file that already exists). Messages go to stderr and never contain secrets, tokens or
plaintext; secrets reach stdout only where printing them is the command's purpose (a
TOTP provisioning URI, a decrypted field, ``totp code``).
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, NoReturn


class CLIError(Exception):
    """A failure reported as ``bitsec: <message>`` with exit status ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _fail(message: str, status: int = 2) -> NoReturn:
    raise CLIError(message, status)


# ---- input and output helpers -----------------------------------------------------------

def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        _fail(f"cannot read {what} {path}: {e.strerror}")


def _text_input(value: str | None, what: str) -> str:
    """An argument, or stdin when it is ``-`` or absent (keeps tokens out of the process list)."""
    if value is None or value == "-":
        if sys.stdin.isatty():
            print(f"bitsec: reading the {what} from stdin (end with Ctrl-D)", file=sys.stderr)
        data = sys.stdin.read()
        return data.strip()
    return value


def _bytes_input(value: str | None) -> bytes:
    if value is None or value == "-":
        return sys.stdin.buffer.read()
    return value.encode()


def _decode(raw: bytes, enc: str, what: str) -> bytes:
    if enc == "raw":
        return raw
    text = raw.strip()
    try:
        if enc == "hex":
            return binascii.unhexlify(text)
        if enc == "base64url":
            return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        _fail(f"the {what} is not valid {enc}")


def _secret_from(args: argparse.Namespace, file_attr: str, env_attr: str, what: str) -> bytes | None:
    path = getattr(args, file_attr, None)
    env = getattr(args, env_attr, None)
    if path and env:
        _fail(f"give the {what} either from a file or from an environment variable, not both")
    if path:
        return _read_file(path, what)
    if env:
        v = os.environ.get(env)
        if v is None:
            _fail(f"environment variable {env} is not set")
        return v.encode()
    return None


def write_private_file(path: str, data: bytes, force: bool) -> None:
    """Writes ``data`` to a new file of mode 0600. An existing file is refused unless
    ``force``; then it is replaced atomically (a new 0600 file renamed over it)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            _fail(f"{path} exists; refusing to overwrite it (use --force to replace it)")
        except OSError as e:
            _fail(f"cannot create {path}: {e.strerror}")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=".bitsec-", dir=directory)
    except OSError as e:
        _fail(f"cannot create a file in {directory}: {e.strerror}")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        _fail(f"cannot write {path}: {e.strerror}")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _runtime(path: str) -> Any:
    from . import Runtime
    from .errors import BitsecError

    try:
        return Runtime(path)
    except BitsecError as e:
        _fail(f"configuration {path}: {e}")


# ---- commands -----------------------------------------------------------------------------

def cmd_version(args: argparse.Namespace) -> int:
    import bitsec

    info = {"package": bitsec.__version__, "library": bitsec.library_version(), "abi": bitsec.ABI_VERSION,
            "library_path": bitsec.library_path()}
    if args.json:
        _print_json(info)
    else:
        print(f"bitsec {info['package']} (library {info['library']}, ABI {info['abi']}, {info['library_path']})")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from . import Runtime
    from .errors import BitsecError

    if not os.path.exists(args.file):
        _fail(f"cannot read configuration {args.file}: No such file or directory")
    try:
        with Runtime(args.file) as rt:
            desc = rt.describe()
    except BitsecError as e:
        if args.json:
            _print_json({"valid": False, "file": args.file, "error": str(e), "status": type(e).__name__})
        else:
            print(f"{args.file}: invalid: {e}", file=sys.stderr)
        return 1
    sections = sorted(k for k, v in (desc.get("sections") or {}).items() if v is not None and k != "store")
    if args.json:
        _print_json({"valid": True, "file": args.file, "sections": sections})
    else:
        print(f"{args.file}: valid ({', '.join(sections) or 'no sections'})")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from . import keys, random_bytes

    kind = args.kind
    snippet: dict[str, Any]
    info: dict[str, Any] = {"kind": kind, "file": os.path.abspath(args.out), "mode": "0600"}
    if kind in ("rsa", "ec", "ed25519"):
        key_type = {"rsa": f"RSA-{args.bits}", "ec": args.curve, "ed25519": "Ed25519"}[kind]
        alg = args.alg or keys.KEY_TYPES[key_type]
        if kind == "rsa" and alg not in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
            _fail(f"--alg {alg} does not fit an RSA key")
        pem = keys.generate_signing_key(key_type)
        jwk = keys.public_jwk(pem, kid=args.kid, alg=alg)
        write_private_file(args.out, pem.encode("ascii"), args.force)
        info.update(type=key_type, alg=alg, kid=jwk["kid"], thumbprint=keys.jwk_thumbprint(pem))
        snippet = {"kid": jwk["kid"], "alg": alg, "pem": {"file": info["file"]}}
    elif kind == "hmac":
        alg = args.alg or "HS256"
        if alg not in keys.HMAC_SECRET_BYTES:
            _fail(f"--alg {alg} is not an HMAC algorithm (HS256, HS384, HS512)")
        secret = random_bytes(keys.HMAC_SECRET_BYTES[alg])
        write_private_file(args.out, base64.b64encode(secret) + b"\n", args.force)
        kid = args.kid or "hmac-" + time.strftime("%Y%m%d", time.gmtime())
        info.update(alg=alg, kid=kid, bytes=len(secret), encoding="base64")
        snippet = {"kid": kid, "alg": alg, "secret": {"file": info["file"], "encoding": "base64"}}
    else:  # field
        secret = random_bytes(32)
        write_private_file(args.out, base64.b64encode(secret) + b"\n", args.force)
        key_id = args.kid or time.strftime("%Y-%m", time.gmtime())
        info.update(id=key_id, bytes=32, encoding="base64")
        snippet = {"id": key_id, "secret": {"file": info["file"], "encoding": "base64"}}
    info["config"] = snippet
    if args.json:
        _print_json(info)
    else:
        section = "fields.keys" if kind == "field" else "tokens.keys"
        print(f"wrote {info['file']} (mode 0600)")
        print(f"{section} entry: {json.dumps(snippet)}")
    return 0


def cmd_jwks(args: argparse.Namespace) -> int:
    from . import keys
    from .errors import BitsecError

    if args.kid and len(args.kid) != len(args.files):
        _fail(f"--kid given {len(args.kid)} times for {len(args.files)} key file(s): give it once per file, in order")
    out = []
    for i, path in enumerate(args.files):
        pem = _read_file(path, "key")
        try:
            # --alg names the algorithm of RSA keys; EC and Ed25519 keys have exactly one.
            rsa = json.loads(keys._canonical_jwk(pem))["kty"] == "RSA"
            out.append(keys.public_jwk(pem, kid=args.kid[i] if args.kid else None, alg=args.alg if rsa else None))
        except BitsecError as e:
            _fail(f"{path}: {e}")
    kids = [k["kid"] for k in out]
    if len(set(kids)) != len(kids):
        _fail("two keys have the same kid")
    doc = {"keys": out}
    text = json.dumps(doc, indent=2) + "\n"
    if args.out:
        try:
            with open(args.out, "w") as f:
                f.write(text)
        except OSError as e:
            _fail(f"cannot write {args.out}: {e.strerror}")
    else:
        sys.stdout.write(text)
    return 0


def _b64url_json(part: str, what: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        _fail(f"the token's {what} is not base64url JSON", 1)


def cmd_token_inspect(args: argparse.Namespace) -> int:
    token = _text_input(args.token, "token")
    parts = token.split(".")
    if len(parts) != 3:
        _fail("not a compact JWS (three dot-separated parts)", 1)
    header = _b64url_json(parts[0], "header")
    payload = _b64url_json(parts[1], "payload")
    if args.json:
        _print_json({"verified": False, "header": header, "payload": payload})
    else:
        print("UNVERIFIED: decoded without checking the signature, expiry or issuer; do not trust these claims")
        print("header:  " + json.dumps(header))
        print("payload: " + json.dumps(payload, indent=2).replace("\n", "\n         "))
        for claim in ("iat", "nbf", "exp"):
            v = payload.get(claim) if isinstance(payload, dict) else None
            if isinstance(v, (int, float)):
                print(f"{claim}: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(v))}")
    return 0


def cmd_token_sign(args: argparse.Namespace) -> int:
    from .errors import BitsecError

    text = _text_input(args.claims, "claims")
    try:
        claims = json.loads(text)
    except ValueError:
        _fail("the claims are not valid JSON")
    if not isinstance(claims, dict):
        _fail("the claims must be a JSON object")
    now = int(time.time())
    if args.ttl is not None:
        claims.setdefault("iat", now)
        claims["exp"] = now + args.ttl
    rt = _runtime(args.config)
    try:
        token = rt.sign_token(claims, kid=args.kid)
    except BitsecError as e:
        _fail(f"cannot sign: {e}")
    finally:
        rt.close()
    if args.json:
        _print_json({"token": token})
    else:
        print(token)
    return 0


def cmd_token_verify(args: argparse.Namespace) -> int:
    from .tokens import TokenError
    from .errors import BitsecError

    token = _text_input(args.token, "token")
    rt = _runtime(args.config)
    try:
        claims = rt.verify_token(token, at=args.at)
    except TokenError as e:
        if args.json:
            _print_json({"valid": False, "reason": e.reason})
        else:
            print(f"invalid: {e.reason}: {e}", file=sys.stderr)
        return 1
    except BitsecError as e:
        _fail(f"cannot verify: {e}")
    finally:
        rt.close()
    if args.json:
        _print_json({"valid": True, "claims": claims.to_dict()})
    else:
        print("valid")
        print(json.dumps(claims.to_dict(), indent=2))
    return 0


def _totp_secret(args: argparse.Namespace) -> str:
    from . import totp_generate_secret

    if args.generate:
        if not args.secret_file:
            _fail("--generate needs --secret-file (the new secret is written there, mode 0600)")
        secret = totp_generate_secret(args.bits)
        write_private_file(args.secret_file, secret.encode() + b"\n", force=False)
        return secret
    raw = _secret_from(args, "secret_file", "secret_env", "TOTP secret")
    if raw is None:
        _fail("give the secret with --secret-file or --secret-env (or create one with --generate --secret-file FILE)")
    return raw.decode("ascii", "replace").strip()


def _totp_uri(args: argparse.Namespace) -> str:
    from . import totp_provisioning_uri
    from .errors import BitsecError

    secret = _totp_secret(args)
    try:
        return totp_provisioning_uri(secret, args.account, args.issuer, algorithm=args.algorithm,
                                     digits=args.digits, period=args.period)
    except BitsecError as e:
        _fail(f"cannot build the URI: {e}")


def cmd_totp_uri(args: argparse.Namespace) -> int:
    uri = _totp_uri(args)
    if args.json:
        _print_json({"uri": uri})
    else:
        print(uri)
    return 0


def cmd_totp_qr(args: argparse.Namespace) -> int:
    try:
        import qrcode
    except ImportError:
        _fail("totp qr needs the qr extra: pip install 'bitsec[qr]'")
    uri = _totp_uri(args)
    if args.png:
        from . import totp_qr_png

        write_private_file(args.png, totp_qr_png(uri), args.force)
        print(f"wrote {os.path.abspath(args.png)} (mode 0600: the QR code holds the secret)")
        return 0
    qr = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(uri)
    qr.make(fit=True)
    qr.print_ascii(out=sys.stdout, invert=True)
    return 0


def cmd_totp_code(args: argparse.Namespace) -> int:
    from . import totp_now
    from .errors import BitsecError

    secret = _totp_secret(args)
    at = int(time.time()) if args.at is None else args.at
    try:
        code = totp_now(secret, algorithm=args.algorithm, digits=args.digits, period=args.period, at=at)
    except BitsecError as e:
        _fail(f"cannot compute the code: {e}")
    remaining = args.period - (at % args.period)
    if args.json:
        _print_json({"code": code, "step": at // args.period, "valid_for": remaining})
    else:
        print(code)
    return 0


def _field_common(args: argparse.Namespace) -> tuple[Any, str]:
    return _runtime(args.config), args.context


def cmd_field_encrypt(args: argparse.Namespace) -> int:
    from .errors import BitsecError

    plaintext = _bytes_input(args.value)
    if args.strip_newline and plaintext.endswith(b"\n"):
        plaintext = plaintext[:-1]
    rt, ctx = _field_common(args)
    try:
        token = rt.encrypt_field(plaintext, ctx, deterministic=args.deterministic)
    except BitsecError as e:
        _fail(f"cannot encrypt: {e}")
    finally:
        rt.close()
    if args.json:
        _print_json({"token": token})
    else:
        print(token)
    return 0


def _field_op(args: argparse.Namespace, verb: str, done: str, op: Callable[[Any, str, Any], Any]) -> tuple[str, Any] | int:
    """Runs ``op(rt, token, context)`` on the token of ``args`` with the field keys: (the
    token, the result), or 1 after printing why the token was refused (``{done: false,
    "reason": ...}`` with ``--json``); any other error stops the command."""
    from .fields import FieldDecryptError
    from .errors import BitsecError

    token = _text_input(args.token, "field token")
    rt, ctx = _field_common(args)
    try:
        return token, op(rt, token, ctx)
    except FieldDecryptError as e:
        if args.json:
            _print_json({done: False, "reason": e.reason})
        else:
            print(f"refused: {e.reason}", file=sys.stderr)
        return 1
    except BitsecError as e:
        _fail(f"cannot {verb}: {e}")
    finally:
        rt.close()


def cmd_field_decrypt(args: argparse.Namespace) -> int:
    r = _field_op(args, "decrypt", "decrypted", lambda rt, token, ctx: rt.decrypt_field(token, ctx))
    if isinstance(r, int):
        return r
    plaintext: bytes = r[1]
    if args.json:
        try:
            _print_json({"decrypted": True, "plaintext": plaintext.decode("utf-8")})
        except UnicodeDecodeError:
            _print_json({"decrypted": True, "plaintext_base64": base64.b64encode(plaintext).decode()})
    else:
        sys.stdout.buffer.write(plaintext)
        if sys.stdout.isatty():
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    return 0


def cmd_field_rewrap(args: argparse.Namespace) -> int:
    from .fields import field_key_id

    r = _field_op(args, "rewrap", "rewrapped", lambda rt, token, ctx: rt.rewrap_field(token, ctx))
    if isinstance(r, int):
        return r
    token, new = r
    if args.json:
        _print_json({"token": new, "rewrapped": new != token, "key_id": field_key_id(new)})
    else:
        print(new)
    return 0


def _audit_key(args: argparse.Namespace) -> bytes | None:
    raw = _secret_from(args, "key_file", "key_env", "key")
    return None if raw is None else _decode(raw, args.key_encoding, "key")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from . import audit_verify
    from .errors import BitsecError

    try:
        report = audit_verify(args.files, key=_audit_key(args))
    except BitsecError as e:
        _fail(str(e))
    if args.json:
        print(json.dumps(report.raw, indent=2))
    elif report.intact:
        print(f"intact: {report.records} records, seq {report.first_seq}-{report.last_seq}, "
              f"{len(report.files)} file(s), chain {report.chain}, last hash {report.last_hash}")
        if report.torn_tail:
            print(f"note: {report.torn_tail['file']} ends with an unterminated record of {report.torn_tail['bytes']} "
                  "bytes (a crash during a write; never acknowledged as durable)")
        if report.events_rejected or report.events_dropped:
            print(f"note: the trail reports {report.events_rejected} event(s) refused by validation and "
                  f"{report.events_dropped} dropped on a full queue (audit/event_rejected, audit/events_dropped records)")
    else:
        p = report.problem
        assert p is not None
        seq = f" (seq {p.seq})" if p.seq is not None else ""
        print(f"TAMPERED: {p.kind} at {p.file}:{p.line}{seq}: {p.detail}")
        print(f"verified before it: {report.records} records, seq {report.first_seq}-{report.last_seq}")
    return 0 if report.intact else 1


def _audit_line(line: bytes, as_json: bool) -> str:
    text = line.decode("utf-8", "replace").rstrip("\n")
    if as_json:
        return text
    try:
        rec = json.loads(text)
    except ValueError:
        return f"(not a JSON record) {text[:200]}"
    if not isinstance(rec, dict):
        return text
    ts = rec.get("ts") or rec.get("time") or rec.get("timestamp") or ""
    kind = "/".join(str(rec[k]) for k in ("type", "subtype") if rec.get(k) is not None)
    fields = [f"{k}={rec[k]}" for k in ("actor", "tenant", "resource", "action", "result", "reason") if rec.get(k) is not None]
    return " ".join(str(x) for x in (rec.get("seq", "?"), ts, kind, *fields) if x != "")


def _last_lines(path: str, n: int) -> tuple[list[bytes], int]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            pos, data = end, b""
            while pos > 0 and data.count(b"\n") <= n:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except OSError as e:
        _fail(f"cannot read {path}: {e.strerror}")
    lines = [ln + b"\n" for ln in data.split(b"\n")[:-1]]  # only complete records
    complete = sum(len(x) for x in lines)
    return (lines[-n:] if n > 0 else []), pos + complete


def cmd_audit_tail(args: argparse.Namespace) -> int:
    lines, offset = _last_lines(args.file, args.lines)
    for ln in lines:
        print(_audit_line(ln, args.json))
    sys.stdout.flush()
    if not args.follow:
        return 0
    ino = os.stat(args.file).st_ino
    pending = b""
    try:
        while True:
            try:
                st = os.stat(args.file)
            except FileNotFoundError:
                time.sleep(args.interval)
                continue
            if st.st_ino != ino or st.st_size < offset:  # rotated: the new file from its start
                ino, offset, pending = st.st_ino, 0, b""
            if st.st_size > offset:
                with open(args.file, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(st.st_size - offset)
                offset += len(chunk)
                pending += chunk
                *done, pending = pending.split(b"\n")
                for ln in done:
                    print(_audit_line(ln + b"\n", args.json))
                sys.stdout.flush()
            else:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


# ---- the parser ---------------------------------------------------------------------------

def _secret_args(p: argparse.ArgumentParser, generate: bool = True) -> None:
    p.add_argument("--secret-file", metavar="FILE", help="the base32 secret, from a file")
    p.add_argument("--secret-env", metavar="VAR", help="the base32 secret, from an environment variable")
    if generate:
        p.add_argument("--generate", action="store_true",
                       help="create a new secret into --secret-file (mode 0600; refuses an existing file)")
        p.add_argument("--bits", type=int, default=160, help="size of a --generate'd secret (default 160)")
    p.add_argument("--algorithm", choices=["SHA1", "SHA256", "SHA512"], default="SHA1", help="HMAC hash (default SHA1)")
    p.add_argument("--digits", type=int, choices=[6, 7, 8], default=6, help="code length (default 6)")
    p.add_argument("--period", type=int, default=30, help="seconds per step (default 30)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bitsec",
        description="bitsec command line: configuration checks, keys, tokens, TOTP, field encryption and audit trails.",
        epilog="Exit status: 0 success; 1 a negative answer (invalid configuration or token, refused field token, "
               "tampered trail); 2 usage error or failure.")
    ap.add_argument("--version", action="store_true", help="print the package and library versions and exit")
    ap.add_argument("--json", action="store_true", help="with --version: print it as JSON")
    sub = ap.add_subparsers(dest="group", metavar="COMMAND")

    # config
    config = sub.add_parser("config", help="configuration files", description="Configuration files.")
    csub = config.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = csub.add_parser("check", help="validate a configuration file",
                        description="Opens a runtime from FILE exactly as a service would (secrets, key files and the "
                                    "audit file sink included) and closes it. Exit 0 when valid; 1 with the field "
                                    "path and reason when not.")
    p.add_argument("file", metavar="FILE", help="the JSON configuration")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_config_check)

    # keys
    keysp = sub.add_parser("keys", help="generate keys", description="Generate keys.")
    ksub = keysp.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = ksub.add_parser("generate", help="generate a signing key, an HMAC secret or a field key into a file",
                        description="Generates a key with OpenSSL (through libbitsec) into FILE, mode 0600; an "
                                    "existing FILE is refused unless --force. rsa, ec, ed25519: a PKCS#8 PEM private "
                                    "key for tokens.keys (its public JWK: bitsec jwks). hmac: an HMAC secret of the "
                                    "hash's size, base64. field: a 32-byte field-encryption key, base64. Prints the "
                                    "configuration entry that reads the file, never the key.")
    p.add_argument("kind", choices=["rsa", "ec", "ed25519", "hmac", "field"], help="what to generate")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the file to write (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--bits", type=int, choices=[2048, 3072, 4096], default=3072, help="rsa: modulus size (default 3072)")
    p.add_argument("--curve", choices=["P-256", "P-384", "P-521"], default="P-256", help="ec: curve (default P-256)")
    p.add_argument("--alg", help="JWS algorithm: rsa RS256 (default), RS384, RS512, PS256, PS384, PS512; hmac HS256 "
                                 "(default), HS384, HS512; ec and ed25519 follow from the key")
    p.add_argument("--kid", help="key id in the printed entry (default: RFC 7638 thumbprint for rsa/ec/ed25519, "
                                 "hmac-YYYYMMDD, or YYYY-MM for field keys)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_keys_generate)

    # jwks
    p = sub.add_parser("jwks", help="the public JWK Set of private (or public) key files",
                       description="Prints the JWK Set ({\"keys\": [...]}) of the public halves of PEM keys (private "
                                   "keys, public keys or certificates), for tokens.jwks of verifying services or a "
                                   "/.well-known/jwks.json endpoint. Never contains private members.")
    p.add_argument("files", nargs="+", metavar="KEYFILE", help="PEM key files")
    p.add_argument("--kid", action="append", help="key id, once per file in order (default: RFC 7638 thumbprint)")
    p.add_argument("--alg", help="the algorithm of RSA keys (RS256, PS256, ...; required for RSA keys, which bitsec "
                                 "does not guess); EC and Ed25519 keys get their curve's")
    p.add_argument("-o", "--out", metavar="FILE", help="write the set to FILE instead of stdout")
    p.set_defaults(func=cmd_jwks)

    # token
    token = sub.add_parser("token", help="sign, verify and inspect JWTs", description="Sign, verify and inspect JWTs.")
    tsub = token.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = tsub.add_parser("sign", help="sign claims with a configured key",
                        description="Signs a JSON claims object with a key of the configuration's tokens section "
                                    "(issuing.kid, or --kid). CLAIMS is the JSON text, or - / absent for stdin.")
    p.add_argument("claims", nargs="?", metavar="CLAIMS", help="JSON claims (default: stdin)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration with a tokens section")
    p.add_argument("--kid", help="the signing key's kid")
    p.add_argument("--ttl", type=int, metavar="SECONDS", help="set exp to now + SECONDS (and iat to now if absent)")
    p.add_argument("--json", action="store_true", help='print {"token": ...}')
    p.set_defaults(func=cmd_token_sign)
    p = tsub.add_parser("verify", help="verify a token against the configuration",
                        description="Verifies a token with the configuration's tokens section (signature, expiry, "
                                    "issuer, audience, required claims, revocations). Exit 0 and the claims when "
                                    "valid; 1 and the reason when not. TOKEN is the token, or - / absent for stdin "
                                    "(keeps it out of the process list).")
    p.add_argument("token", nargs="?", metavar="TOKEN", help="the token (default: stdin)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration with a tokens section")
    p.add_argument("--at", type=int, metavar="UNIX_SECONDS", help="verify as of this time (default now)")
    p.add_argument("--json", action="store_true", help='print {"valid": ..., "claims"|"reason": ...}')
    p.set_defaults(func=cmd_token_verify)
    p = tsub.add_parser("inspect", help="decode a token WITHOUT verifying it",
                        description="Decodes a token's header and payload without any check: the output is labelled "
                                    "UNVERIFIED and proves nothing about who issued the token. For debugging; use "
                                    "'bitsec token verify' to trust a token.")
    p.add_argument("token", nargs="?", metavar="TOKEN", help="the token (default: stdin)")
    p.add_argument("--json", action="store_true", help='print {"verified": false, "header": ..., "payload": ...}')
    p.set_defaults(func=cmd_token_inspect)

    # totp
    totp = sub.add_parser("totp", help="TOTP provisioning URIs, QR codes and codes",
                          description="TOTP (RFC 6238) provisioning URIs, QR codes and codes.")
    osub = totp.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = osub.add_parser("uri", help="the otpauth:// provisioning URI (contains the secret)",
                        description="Prints the otpauth:// URI an authenticator app enrols from. It contains the secret.")
    p.add_argument("--account", required=True, help="the account name shown in the app (e.g. the user's e-mail)")
    p.add_argument("--issuer", help="the issuer shown in the app (no ':')")
    _secret_args(p)
    p.add_argument("--json", action="store_true", help='print {"uri": ...}')
    p.set_defaults(func=cmd_totp_uri)
    p = osub.add_parser("qr", help="the provisioning URI as a QR code in the terminal (needs bitsec[qr])",
                        description="Renders the provisioning URI as a QR code in the terminal, or with --png into a "
                                    "PNG file (mode 0600). Needs the qr extra: pip install 'bitsec[qr]'.")
    p.add_argument("--account", required=True, help="the account name shown in the app")
    p.add_argument("--issuer", help="the issuer shown in the app (no ':')")
    _secret_args(p)
    p.add_argument("--png", metavar="FILE", help="write a PNG file instead of printing")
    p.add_argument("--force", action="store_true", help="with --png: replace FILE if it exists")
    p.set_defaults(func=cmd_totp_qr)
    p = osub.add_parser("code", help="the current code of a secret",
                        description="Prints the current TOTP code of a secret (for tests and recovery; it is a "
                                    "second factor: do not log it).")
    _secret_args(p, generate=False)
    p.add_argument("--at", type=int, metavar="UNIX_SECONDS", help="the code at this time (default now)")
    p.add_argument("--json", action="store_true", help='print {"code", "step", "valid_for"}')
    p.set_defaults(func=cmd_totp_code, generate=False, bits=160)

    # field
    field = sub.add_parser("field", help="encrypt, decrypt and rewrap field values",
                           description="Field encryption with the configuration's fields section (AES-256-GCM bound "
                                       "to a context).")
    fsub = field.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, fn, hlp, desc in (
        ("encrypt", cmd_field_encrypt, "encrypt a value (from stdin) under the primary key",
         "Encrypts VALUE (default: stdin, bytes as they are) bound to --context; prints the token."),
        ("decrypt", cmd_field_decrypt, "decrypt a field token (prints the plaintext)",
         "Decrypts TOKEN (default: stdin) with --context; prints the plaintext. A token that does not decrypt "
         "(tampered, wrong context, unknown or retired key) exits 1 with the reason."),
        ("rewrap", cmd_field_rewrap, "re-encrypt a field token under the current primary key",
         "Re-encrypts TOKEN (default: stdin) under the primary key, same context and mode, for key rotation; "
         "prints the new token (the same token when it already is under the primary)."),
    ):
        p = fsub.add_parser(name, help=hlp, description=desc)
        if name == "encrypt":
            p.add_argument("value", nargs="?", metavar="VALUE", help="the plaintext (default: stdin)")
            p.add_argument("--deterministic", action="store_true",
                           help="deterministic mode (the context must be listed in fields.deterministic_contexts)")
            p.add_argument("--strip-newline", action="store_true", help="drop one trailing newline of stdin")
        else:
            p.add_argument("token", nargs="?", metavar="TOKEN", help="the field token (default: stdin)")
        p.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration with a fields section")
        p.add_argument("--context", required=True, help="the context the value is bound to (e.g. table.column|row-id)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(func=fn)

    # audit
    audit = sub.add_parser("audit", help="audit trail tools", description="Audit trail tools.")
    asub = audit.add_subparsers(dest="command", metavar="COMMAND", required=True)
    v = asub.add_parser("verify", help="verify the hash chain of audit files (rotated ones included, any order)",
                        description="Verifies the hash chain of audit files (rotated ones included, in any order). "
                                    "Exit 0 intact, 1 tampered (the first problem is printed), 2 unreadable.")
    v.add_argument("files", nargs="+", metavar="FILE", help="audit files")
    v.add_argument("--key-file", help="the trail's hmac_key, from a file")
    v.add_argument("--key-env", help="the trail's hmac_key, from an environment variable")
    v.add_argument("--key-encoding", choices=["raw", "hex", "base64", "base64url"], default="raw",
                   help="encoding of the key (as in the audit section's hmac_key)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_audit_verify)
    t = asub.add_parser("tail", help="print the last records of an audit file (and follow it)",
                        description="Prints the last N complete records of an audit file, one line each (seq, time, "
                                    "type/subtype, actor, tenant, resource, action, result, reason), or the raw JSON "
                                    "lines with --json; --follow keeps printing new records and follows rotations. "
                                    "It does not verify the chain (bitsec audit verify does).")
    t.add_argument("file", metavar="FILE", help="the audit file")
    t.add_argument("-n", "--lines", type=int, default=10, help="how many records (default 10)")
    t.add_argument("-f", "--follow", action="store_true", help="keep printing new records (Ctrl-C stops)")
    t.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    t.add_argument("--json", action="store_true", help="print the records' JSON lines as they are")
    t.set_defaults(func=cmd_audit_tail)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.version:
        return cmd_version(args)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        ap.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except CLIError as e:
        print(f"bitsec: {e}", file=sys.stderr)
        return e.status
    except ImportError as e:
        print(f"bitsec: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
