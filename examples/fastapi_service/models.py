"""SQLAlchemy models of the reference service, built per application (``build_models``) so
that each app's ``EncryptedType`` columns use that app's own ``bitsec.Runtime``."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import bitsec
from bitsec.sqlalchemy import EncryptedType


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(v: datetime | None) -> str | None:
    """RFC 3339 UTC; SQLite gives the stored instants back without their zone."""
    if v is None:
        return None
    if v.tzinfo is None:
        v = v.replace(tzinfo=timezone.utc)
    return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Models:
    Base: Any
    User: Any
    Equipment: Any
    Inspection: Any
    IssuedToken: Any
    Defect: Any = None
    Report: Any = None
    Artifact: Any = None


def build_models(runtime: Callable[[], bitsec.Runtime]) -> Models:
    """A fresh declarative base with ``users``, ``equipment``, ``inspections`` and
    ``issued_tokens``; ``runtime`` is resolved at first use (``lambda: app.state.bitsec``)."""

    def encrypted() -> EncryptedType:
        # AES-256-GCM, bound to table, column, primary key and tenant (bitsec.sqlalchemy)
        return EncryptedType(runtime, tenant_attribute="tenant_id")

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
        # "scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>" (hashlib.scrypt, random 16-byte salt);
        # "!" once anonymised (no password verifies against it)
        password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
        # role names separated by spaces (role names cannot contain one): ERP and/or ADR-007 roles
        role: Mapped[str] = mapped_column(String(256), nullable=False)
        tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
        # personal data (GDPR export / anonymisation), encrypted at rest
        email: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        full_name: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        phone: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, default=utcnow)
        anonymized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
        # bitsec's sealed TOTP secret (rt.totp_enroll): encrypted for this user by the library.
        # totp_pending: enrolled but not confirmed yet (login does not ask for a code);
        # totp_sealed: confirmed, login requires a code.
        totp_pending: Mapped[str | None] = mapped_column(Text, nullable=True)
        totp_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
        # hashes of the unused backup codes (rt.backup_codes_generate), one a line; never the codes
        backup_codes: Mapped[str | None] = mapped_column(Text, nullable=True)

        @property
        def roles(self) -> list[str]:
            return self.role.split()

    class Equipment(Base):
        __tablename__ = "equipment"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        tenant_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
        name: Mapped[str] = mapped_column(String(200), nullable=False)
        serial_number: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        cost: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        notes: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        created_by: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # users.id

    class Inspection(Base):
        """ADR-007's inspection record: a lot inspected at a station, its outcome, and the
        findings (defect descriptions: the ADR's sensitive quality data), encrypted."""
        __tablename__ = "inspections"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        tenant_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
        lot_id: Mapped[str] = mapped_column(String(64), nullable=False)
        station: Mapped[str] = mapped_column(String(64), nullable=False)
        # open -> passed | failed (closing sets closed_at)
        status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
        defect_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
        findings: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        created_by: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # users.id
        created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
        updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
        closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    class IssuedToken(Base):
        """Every token the service issued that has not expired yet: what logout, refresh and
        anonymisation revoke, and the "sessions" of the GDPR export. Never the token itself."""
        __tablename__ = "issued_tokens"
        jti: Mapped[str] = mapped_column(String(128), primary_key=True)
        user_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
        session_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
        kind: Mapped[str] = mapped_column(String(16), nullable=False)  # access | refresh
        issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
        expires_at: Mapped[int] = mapped_column(Integer, nullable=False)  # Unix time (the token's exp)
        ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
        user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)

    class Defect(Base):
        """ADR-007's defect: one finding of an inspection (same tenant), its kind, severity and
        state; the description is quality data, encrypted."""
        __tablename__ = "defects"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        tenant_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
        inspection_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)  # inspections.id
        defect_type: Mapped[str] = mapped_column(String(64), nullable=False)
        severity: Mapped[str] = mapped_column(String(16), nullable=False)  # low | medium | high | critical
        status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")  # open | confirmed | rejected | fixed
        description: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        created_by: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # users.id
        created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
        updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    class Report(Base):
        """A quality report: a title and the summary computed when it was created (inspections
        by status, defects by severity) over the inspections it names, as JSON text."""
        __tablename__ = "reports"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        tenant_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
        title: Mapped[str] = mapped_column(String(200), nullable=False)
        summary: Mapped[str] = mapped_column(Text, nullable=False)
        created_by: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # users.id
        created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    class Artifact(Base):
        """An uploaded file (an inspection image, a PDF): stored in the data directory under a
        generated name (``stored_name``), never the client's; its declared and checked type,
        size and SHA-256."""
        __tablename__ = "artifacts"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        tenant_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
        inspection_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
        stored_name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
        content_type: Mapped[str] = mapped_column(String(64), nullable=False)
        size: Mapped[int] = mapped_column(Integer, nullable=False)
        sha256: Mapped[str] = mapped_column(String(64), nullable=False)
        original_name: Mapped[str | None] = mapped_column(encrypted(), nullable=True)
        created_by: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # users.id
        created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    return Models(Base, User, Equipment, Inspection, IssuedToken, Defect, Report, Artifact)
