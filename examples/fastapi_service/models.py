"""SQLAlchemy models of the reference service, built per application (``build_models``) so
that each app's ``EncryptedType`` columns use that app's own ``bitsec.Runtime``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import bitsec
from bitsec.sqlalchemy import EncryptedType


@dataclass(frozen=True)
class Models:
    Base: Any
    User: Any
    Equipment: Any


def build_models(runtime: Callable[[], bitsec.Runtime]) -> Models:
    """A fresh declarative base with ``users`` and ``equipment``; ``runtime`` is resolved at
    first use (``lambda: app.state.bitsec``)."""

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
        # "scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>" (hashlib.scrypt, random 16-byte salt)
        password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
        role: Mapped[str] = mapped_column(String(32), nullable=False)
        tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
        # bitsec's sealed TOTP secret (rt.totp_enroll): encrypted for this user by the library
        totp_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)

    class Equipment(Base):
        __tablename__ = "equipment"
        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        tenant_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
        name: Mapped[str] = mapped_column(String(200), nullable=False)
        # AES-256-GCM, bound to table, column, primary key and tenant (bitsec.sqlalchemy)
        serial_number: Mapped[str | None] = mapped_column(EncryptedType(runtime, tenant_attribute="tenant_id"),
                                                          nullable=True)
        cost: Mapped[str | None] = mapped_column(EncryptedType(runtime, tenant_attribute="tenant_id"), nullable=True)
        notes: Mapped[str | None] = mapped_column(EncryptedType(runtime, tenant_attribute="tenant_id"), nullable=True)

    return Models(Base, User, Equipment)
