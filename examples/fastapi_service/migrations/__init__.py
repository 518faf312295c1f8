"""Schema migrations of the reference service (Alembic; ``versions/``).

``upgrade(engine)`` brings a database to the newest revision, in place:

- an empty database gets every revision from the base;
- a database written before migrations existed (the base schema's tables, no
  ``alembic_version``) is checked against the base revision's columns, stamped as the base,
  then upgraded: its rows stay;
- a database of a newer revision than this code knows is refused (``MigrationError``), as is a
  table that lacks a column of the base (a schema older than the base: start over with a fresh
  data directory).

The service runs it at startup (``create_app``); ``python examples/fastapi_service/serve.py
migrate`` runs it alone (before starting several workers, for example). A new schema change
is a new file in ``versions/`` (``alembic -c examples/fastapi_service/alembic.ini revision -m
"..."``), never a change of an existing one.
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

HERE = Path(__file__).resolve().parent
BASE = "0001_base"
#: the base revision's tables and columns (what a database of the version before migrations has)
BASE_COLUMNS = {
    "users": {"id", "username", "password_hash", "role", "tenant_id", "email", "full_name", "phone", "created_at",
              "anonymized_at", "totp_pending", "totp_sealed", "backup_codes"},
    "equipment": {"id", "tenant_id", "name", "serial_number", "cost", "notes", "created_by"},
    "inspections": {"id", "tenant_id", "lot_id", "station", "status", "defect_count", "findings", "created_by",
                    "created_at", "updated_at", "closed_at"},
    "issued_tokens": {"jti", "user_id", "session_id", "kind", "issued_at", "expires_at", "ip", "user_agent"},
}


class MigrationError(RuntimeError):
    pass


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def head() -> str:
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Upgrades the database to the newest revision; returns (revision before, after)."""
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    insp = inspect(engine)
    before = current(engine)
    if before is not None and before not in {s.revision for s in script.walk_revisions()}:
        raise MigrationError(f"the database is at revision {before}, newer than this service knows: "
                             "run a newer version of the service")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        if before is None and insp.has_table("users"):
            for table, columns in BASE_COLUMNS.items():
                have = {c["name"] for c in insp.get_columns(table)} if insp.has_table(table) else set()
                missing = sorted(columns - have)
                if missing:
                    raise MigrationError(f"table {table} has no column {', '.join(missing)}: a schema older than the "
                                         "first migration (start with a fresh data directory)")
            command.stamp(cfg, BASE)
        command.upgrade(cfg, "head")
    return before, head()
