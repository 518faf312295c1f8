"""``bitsec`` command line: ``bitsec audit verify FILE...`` (also ``python -m bitsec``)."""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys


def _key(args: argparse.Namespace) -> bytes | None:
    raw: bytes | None = None
    if args.key_file:
        with open(args.key_file, "rb") as f:
            raw = f.read()
    elif args.key_env:
        v = os.environ.get(args.key_env)
        if v is None:
            raise SystemExit(f"bitsec: environment variable {args.key_env} is not set")
        raw = v.encode()
    if raw is None:
        return None
    enc = args.key_encoding
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
        raise SystemExit(f"bitsec: the key is not valid {enc}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bitsec", description="bitsec command line")
    sub = ap.add_subparsers(dest="group", required=True)
    audit = sub.add_parser("audit", help="audit trail tools")
    asub = audit.add_subparsers(dest="command", required=True)
    v = asub.add_parser("verify", help="verify the hash chain of audit files (rotated ones included, any order)")
    v.add_argument("files", nargs="+", help="audit files")
    v.add_argument("--key-file", help="the trail's hmac_key, from a file")
    v.add_argument("--key-env", help="the trail's hmac_key, from an environment variable")
    v.add_argument("--key-encoding", choices=["raw", "hex", "base64", "base64url"], default="raw",
                   help="encoding of the key (as in the audit section's hmac_key)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)

    from . import audit_verify
    from .errors import BitsecError

    try:
        report = audit_verify(args.files, key=_key(args))
    except BitsecError as e:
        print(f"bitsec: {e}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
