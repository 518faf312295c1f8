"""Schema migrations of the reference service (Alembic, examples/fastapi_service/migrations):
a database of the version before migrations is upgraded in place, rows kept; a fresh one gets
the same schema as the models; schemas older than the base and revisions newer than the code
are refused."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

import bitsec
from refsvc_support import API, CONFIG, PASSWORD, bearer
from fastapi.testclient import TestClient

from examples.fastapi_service import create_app
from examples.fastapi_service.migrations import MigrationError, current, head, upgrade
from test_reference_service_passwords import _old_hash

OLD_SCHEMA = Path(__file__).parent / "data" / "refsvc_schema_before_migrations.sql"


def old_database(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.executescript(OLD_SCHEMA.read_text())
        con.execute("INSERT INTO users (id, username, password_hash, role, tenant_id) VALUES (1, 'olga', ?, 'admin', 'fab-1')",
                    (_old_hash(PASSWORD.format("olga")),))  # the database's own era: the earlier format
        con.execute("INSERT INTO inspections (id, tenant_id, lot_id, station, status, defect_count, created_at) "
                    "VALUES (7, 'fab-1', 'L-OLD', 'AOI-1', 'open', 0, '2026-01-01 00:00:00')")


def test_an_existing_database_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "service.db"
    old_database(db)
    app = create_app(CONFIG, f"sqlite:///{db}")
    assert current(app.state.engine) == head()
    with TestClient(app) as client:
        r = client.post(f"{API}/auth/login", json={"username": "olga", "password": PASSWORD.format("olga")})
        assert r.status_code == 200
        h = bearer(r.json()["access_token"])
        assert client.get(f"{API}/auth/me", headers=h).json()["username"] == "olga"
        # the new tables are usable at once (olga is an ERP admin: reports:create)
        r = client.post("/v1/reports", json={"title": "after the upgrade", "inspection_ids": [7]}, headers=h)
        assert r.status_code == 201, r.text
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT lot_id FROM inspections WHERE id = 7").fetchone() == ("L-OLD",)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"defects", "reports", "artifacts", "alembic_version"} <= tables
    # again: nothing to do
    assert upgrade(app.state.engine) == (head(), head())


def test_a_fresh_database_matches_the_models(tmp_path: Path) -> None:
    app = create_app(CONFIG, f"sqlite:///{tmp_path / 'service.db'}")
    insp = inspect(app.state.engine)
    for name, table in app.state.models.Base.metadata.tables.items():
        have = {c["name"]: c for c in insp.get_columns(name)}
        assert set(have) == {c.name for c in table.columns}, name
        for c in table.columns:
            assert have[c.name]["nullable"] == (c.nullable and not c.primary_key), (name, c.name)


def test_a_schema_older_than_the_base_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "service.db"
    with sqlite3.connect(db) as con:  # the first slice's users table: other columns
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, password TEXT, role TEXT)")
    with pytest.raises(MigrationError, match="users has no column"):
        create_app(CONFIG, f"sqlite:///{db}")


def test_a_newer_revision_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "service.db"
    create_app(CONFIG, f"sqlite:///{db}")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(MigrationError, match="newer"):
        upgrade(create_engine(f"sqlite:///{db}"))
