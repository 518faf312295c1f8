"""bitsec.sqlalchemy.EncryptedType against a real SQLite database file through SQLAlchemy."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import ForeignKey, Integer, String, create_engine, event, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import bitsec
from bitsec.sqlalchemy import EncryptedType, Sealed, bound

K1 = bytes(range(32))
K2 = bytes(range(50, 82))
RT = bitsec.Runtime({"allow_inline_secrets": True, "fields": {
    "keys": [{"id": "k1", "secret": {"value": K1.hex(), "encoding": "hex"}}],
    "deterministic_contexts": ["equipment_records.serial_number"]}})


STATEMENTS: dict = {}


class Base(DeclarativeBase):
    pass


class EquipmentRecord(Base):
    """The ERP guide's equipment record: serial numbers searchable, notes and cost secret."""
    __tablename__ = "equipment_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    serial_number: Mapped[str] = mapped_column(EncryptedType(RT, deterministic_context="equipment_records.serial_number"))
    notes: Mapped[str | None] = mapped_column(EncryptedType(lambda: RT, tenant_attribute="tenant_id"), nullable=True)
    cost: Mapped[bytes | None] = mapped_column(EncryptedType(RT, python_type=bytes), nullable=True)


class Defect(Base):
    """A client-generated primary key: the context is complete before the INSERT."""
    __tablename__ = "defects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    record_id: Mapped[int] = mapped_column(ForeignKey("equipment_records.id"))
    description: Mapped[str] = mapped_column(EncryptedType(RT))


@pytest.fixture()
def engine(tmp_path):
    eng = create_engine(f"sqlite:///{tmp_path / 'erp.db'}")
    Base.metadata.create_all(eng)
    statements: list[str] = []
    event.listen(eng, "before_cursor_execute", lambda conn, cur, stmt, *a: statements.append(stmt))
    STATEMENTS[eng] = statements
    yield eng
    STATEMENTS.pop(eng, None)
    eng.dispose()


def test_round_trip_through_a_sqlite_file(engine) -> None:
    with Session(engine) as s:
        r = EquipmentRecord(tenant_id="fab-1", serial_number="SN-0001", notes="bearing worn", cost=b"1250.00")
        s.add(r)
        s.commit()
        rid = r.id
        assert r.notes == "bearing worn"  # expired on commit, reloaded and decrypted
    with Session(engine) as s:
        r = s.get(EquipmentRecord, rid)
        assert (r.serial_number, r.notes, r.cost) == ("SN-0001", "bearing worn", b"1250.00")
    with engine.connect() as c:
        row = c.execute(text("SELECT serial_number, notes, cost FROM equipment_records WHERE id = :i"), {"i": rid}).one()
    assert "SN-0001" not in row.serial_number and "bearing" not in row.notes and "1250" not in row.cost
    # The documented context: table.column|primary key|tenant.
    assert RT.decrypt_field(row.notes, f"equipment_records.notes|{rid}|fab-1") == b"bearing worn"
    assert RT.decrypt_field(row.cost, f"equipment_records.cost|{rid}") == b"1250.00"
    assert bitsec.field_key_id(row.notes) == "k1"


def test_autoincrement_rows_get_their_key_in_one_transaction(engine) -> None:
    with Session(engine) as s:
        s.add(EquipmentRecord(tenant_id="fab-1", serial_number="SN-1", notes="n"))
        s.commit()
    stmts = [x.split()[0] for x in STATEMENTS[engine] if x.split()[0] in ("INSERT", "UPDATE")]
    assert stmts == ["INSERT", "UPDATE"]  # NULL first, the token once the id is known


def test_client_side_keys_need_a_single_insert(engine) -> None:
    with Session(engine) as s:
        r = EquipmentRecord(tenant_id="t", serial_number="SN-2")
        s.add(r)
        s.flush()
        STATEMENTS[engine].clear()
        d = Defect(id=str(uuid.uuid4()), record_id=r.id, description="crack near the die edge")
        s.add(d)
        s.commit()
        did = d.id
    assert [x.split()[0] for x in STATEMENTS[engine] if x.split()[0] in ("INSERT", "UPDATE")] == ["INSERT"]
    with Session(engine) as s:
        assert s.get(Defect, did).description == "crack near the die edge"


def test_a_token_copied_to_another_row_fails(engine) -> None:
    with Session(engine) as s:
        a = EquipmentRecord(tenant_id="fab-1", serial_number="SN-A", notes="secret A")
        b = EquipmentRecord(tenant_id="fab-1", serial_number="SN-B", notes="secret B")
        s.add_all([a, b])
        s.commit()
        ida, idb = a.id, b.id
    with engine.begin() as c:
        c.execute(text("UPDATE equipment_records SET notes = (SELECT notes FROM equipment_records WHERE id = :a) WHERE id = :b"),
                  {"a": ida, "b": idb})
    with Session(engine) as s:
        with pytest.raises(bitsec.FieldWrongContextError):
            s.get(EquipmentRecord, idb)
    # Moving a row to another tenant without re-encrypting is caught the same way.
    with engine.begin() as c:
        c.execute(text("UPDATE equipment_records SET tenant_id = 'fab-2' WHERE id = :a"), {"a": ida})
    with Session(engine) as s:
        with pytest.raises(bitsec.FieldWrongContextError):
            s.get(EquipmentRecord, ida)


def test_updates_reencrypt_only_changed_values(engine) -> None:
    with Session(engine) as s:
        r = EquipmentRecord(tenant_id="t", serial_number="SN-U", notes="v1", cost=b"1")
        s.add(r)
        s.commit()
        rid = r.id
    with engine.connect() as c:
        before = c.execute(text("SELECT notes, cost FROM equipment_records WHERE id = :i"), {"i": rid}).one()
    with Session(engine) as s:
        r = s.get(EquipmentRecord, rid)
        r.notes = "v2"
        s.commit()
        assert r.notes == "v2"
    with engine.connect() as c:
        after = c.execute(text("SELECT notes, cost FROM equipment_records WHERE id = :i"), {"i": rid}).one()
    assert after.notes != before.notes and after.cost == before.cost
    with Session(engine) as s:
        r = s.get(EquipmentRecord, rid)
        assert (r.notes, r.cost) == ("v2", b"1")
        r.notes = None
        s.commit()
    with Session(engine) as s:
        assert s.get(EquipmentRecord, rid).notes is None


def test_deterministic_column_is_searchable(engine) -> None:
    with Session(engine) as s:
        s.add_all([EquipmentRecord(tenant_id="t", serial_number=f"SN-{i}") for i in range(5)])
        s.add(EquipmentRecord(tenant_id="u", serial_number="SN-3"))
        s.commit()
    with Session(engine) as s:
        found = s.scalars(select(EquipmentRecord).where(EquipmentRecord.serial_number == "SN-3")).all()
        assert sorted(r.tenant_id for r in found) == ["t", "u"]
        assert s.scalars(select(EquipmentRecord).where(EquipmentRecord.serial_number == "SN-9")).all() == []
    with engine.connect() as c:
        tokens = [r[0] for r in c.execute(text("SELECT serial_number FROM equipment_records"))]
    assert len(set(tokens)) == 5  # equal values are equal tokens: the documented leak


def test_core_statements_use_bound_and_sealed(engine) -> None:
    table = EquipmentRecord.__table__
    with engine.begin() as c:
        c.execute(insert(table).values(id=77, tenant_id="t", serial_number="SN-77",
                                       notes=bound("core note", "equipment_records.notes|77|t")))
        with pytest.raises(Exception, match="bound to its row"):
            c.execute(insert(table).values(id=78, tenant_id="t", serial_number="SN-78", notes="plain"))
    with engine.connect() as c:
        got = c.execute(select(table.c.notes).where(table.c.id == 77)).scalar_one()
    assert isinstance(got, Sealed)
    assert got.open(RT, "equipment_records.notes|77|t") == b"core note"
    with Session(engine) as s:
        assert s.get(EquipmentRecord, 77).notes == "core note"


def test_rotation_and_rewrap_of_a_column(engine) -> None:
    with Session(engine) as s:
        r = EquipmentRecord(tenant_id="t", serial_number="SN-R", notes="rotate me")
        s.add(r)
        s.commit()
        rid = r.id
    section = {"keys": [{"id": "k2", "secret": {"value": K2.hex(), "encoding": "hex"}},
                        {"id": "k1", "secret": {"value": K1.hex(), "encoding": "hex"}}],
               "primary": "k2", "deterministic_contexts": ["equipment_records.serial_number"]}
    RT.fields_reload(section)
    try:
        with engine.begin() as c:  # a background migration: rewrap every token in place
            for row in c.execute(text("SELECT id, tenant_id, notes FROM equipment_records WHERE notes IS NOT NULL")).all():
                ctx = bitsec.field_context("equipment_records.notes", row.id, row.tenant_id)
                c.execute(text("UPDATE equipment_records SET notes = :n WHERE id = :i"),
                          {"n": RT.rewrap_field(row.notes, ctx), "i": row.id})
            notes = c.execute(text("SELECT notes FROM equipment_records WHERE id = :i"), {"i": rid}).scalar_one()
        assert bitsec.field_key_id(notes) == "k2"
        with Session(engine) as s:
            assert s.get(EquipmentRecord, rid).notes == "rotate me"
    finally:
        RT.fields_reload({"keys": [{"id": "k1", "secret": {"value": K1.hex(), "encoding": "hex"}}],
                          "deterministic_contexts": ["equipment_records.serial_number"]})
