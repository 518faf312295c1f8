"""The base: the schema of the service before migrations existed (users, equipment,
inspections, issued_tokens). A database created by that version is stamped with this
revision (``migrations.upgrade``) and upgraded from here. Encrypted columns are text
(bitsec's sealed values).

Revision ID: 0001_base
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_base"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(256), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String, nullable=True),
        sa.Column("full_name", sa.String, nullable=True),
        sa.Column("phone", sa.String, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("anonymized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("totp_pending", sa.Text, nullable=True),
        sa.Column("totp_sealed", sa.Text, nullable=True),
        sa.Column("backup_codes", sa.Text, nullable=True),
    )
    op.create_table(
        "equipment",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("serial_number", sa.String, nullable=True),
        sa.Column("cost", sa.String, nullable=True),
        sa.Column("notes", sa.String, nullable=True),
        sa.Column("created_by", sa.Integer, nullable=True, index=True),
    )
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("lot_id", sa.String(64), nullable=False),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("defect_count", sa.Integer, nullable=False),
        sa.Column("findings", sa.String, nullable=True),
        sa.Column("created_by", sa.Integer, nullable=True, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "issued_tokens",
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False, index=True),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
    )


def downgrade() -> None:
    for table in ("issued_tokens", "inspections", "equipment", "users"):
        op.drop_table(table)
