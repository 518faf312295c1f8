"""Retention: personal data older than the configured period is purged, and the audit trail
stays verifiable.

The period is the configuration's ``service.retention.personal_data_days`` (default 90 days).
``purge(app, now=...)`` (``python examples/fastapi_service/serve.py retention``) removes:

- from the database: the client address and user agent recorded with each issued token
  (``issued_tokens.ip`` / ``user_agent``) once the token was issued more than the period ago,
  and the rows of tokens that also expired;
- from the audit trail: whole rotated audit files (``audit.jsonl.<last seq>``: the file sink
  rotates daily, ``rotate_seconds``) whose newest record is older than the period. Their
  records carry client addresses and user agents, which cannot be cut out of a record without
  breaking its hash. The current file is never removed.

Before removing any file, ``purge`` writes a retention record into the trail itself (type
``application``, subtype ``audit_retention``) naming what goes: ``details.purged_through_seq``
(the last sequence number removed), ``details.purged_last_hash`` (that record's hash, which the
first remaining record links to in its ``prev``), the files and the period. The record is
hash-chained like every other, so it cannot be removed or edited without ``bitsec audit
verify`` noticing. ``verify_trail`` then checks the remaining files as a whole: the chain is
intact (``bitsec.audit_verify``), and either it starts at sequence 1, or a retention record
in it accounts for every missing record: it names exactly the sequence number before the
first remaining one and the hash that record links to. Records removed WITHOUT such a record
(an attacker deleting the oldest files) are reported as ``unaccounted``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import delete, update

import bitsec

DEFAULT_DAYS = 90


@dataclass
class PurgeReport:
    tokens_cleared: int = 0
    tokens_deleted: int = 0
    files_removed: list[str] = field(default_factory=list)
    purged_through_seq: int | None = None


def _last_record(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    for line in reversed(lines):
        try:
            return json.loads(line)  # type: ignore[no-any-return]
        except ValueError:
            continue
    return None


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def rotated_files(audit_path: Path) -> list[Path]:
    """The rotated files of the trail, oldest first (their suffix is their last seq)."""
    files = [p for p in audit_path.parent.glob(audit_path.name + ".*") if p.suffix[1:].isdigit()]
    return sorted(files, key=lambda p: int(p.suffix[1:]))


def purge(app: Any, *, now: float | None = None, days: int | None = None) -> PurgeReport:
    """Purges what is older than the retention period (module text). ``app``: the started
    service (its runtime open: the retention record is written through it)."""
    now = time.time() if now is None else now
    if days is None:
        days = int((app.state.service_config.get("retention") or {}).get("personal_data_days", DEFAULT_DAYS))
    if not 1 <= days <= 36500:
        raise ValueError("service.retention.personal_data_days: 1 to 36500")
    cutoff = now - days * 86400
    report = PurgeReport()
    m = app.state.models
    cutoff_dt = datetime.fromtimestamp(cutoff, timezone.utc)
    with app.state.sessions() as db, db.begin():
        report.tokens_deleted = db.execute(delete(m.IssuedToken).where(
            m.IssuedToken.issued_at < cutoff_dt, m.IssuedToken.expires_at < now)).rowcount or 0
        report.tokens_cleared = db.execute(update(m.IssuedToken).where(
            m.IssuedToken.issued_at < cutoff_dt, (m.IssuedToken.ip.is_not(None)) | (m.IssuedToken.user_agent.is_not(None)))
            .values(ip=None, user_agent=None)).rowcount or 0

    audit_path: Path | None = app.state.audit_path
    if audit_path is None:
        return report
    old: list[tuple[Path, dict[str, Any]]] = []
    for p in rotated_files(audit_path):
        last = _last_record(p)
        if last is None or _epoch(last["time"]) >= cutoff:
            break  # files are in order: the rest is newer
        old.append((p, last))
    if not old:
        return report
    through = old[-1][1]
    rt: bitsec.Runtime = app.state.bitsec
    rt.audit_emit({"type": "application", "subtype": "audit_retention", "result": "success",
                   "details": {"purged_through_seq": int(through["seq"]), "purged_last_hash": through["hash"],
                               "files": [p.name for p, _ in old], "retention_days": days}})
    rt.audit_flush()  # on disk before anything goes
    for p, _ in old:
        p.unlink()
        report.files_removed.append(p.name)
    report.purged_through_seq = int(through["seq"])
    return report


@dataclass
class TrailReport:
    intact: bool
    first_seq: int
    last_seq: int
    purged_through_seq: int | None
    problem: str | None


def verify_trail(audit_path: Path, key: bytes | None = None) -> TrailReport:
    """Verifies the remaining trail and that retention records account for what is missing."""
    files = [*rotated_files(audit_path), audit_path]
    files = [p for p in files if p.exists()]
    r = bitsec.audit_verify(files, key)
    if not r.intact:
        return TrailReport(False, r.first_seq, r.last_seq, None, f"chain broken: {r.problem}")
    if r.first_seq <= 1:
        return TrailReport(True, r.first_seq, r.last_seq, None, None)
    first_prev = None
    accounted: set[tuple[int, str]] = set()
    for p in files:
        for line in p.read_bytes().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("seq") == r.first_seq:
                first_prev = rec.get("prev")
            d = rec.get("details") or {}
            if rec.get("subtype") == "audit_retention" and rec.get("type") == "application":
                accounted.add((int(d.get("purged_through_seq", -1)), str(d.get("purged_last_hash"))))
    if (r.first_seq - 1, str(first_prev)) in accounted:
        return TrailReport(True, r.first_seq, r.last_seq, r.first_seq - 1, None)
    return TrailReport(False, r.first_seq, r.last_seq, None,
                       f"unaccounted: records 1..{r.first_seq - 1} are missing and no retention record names them")
