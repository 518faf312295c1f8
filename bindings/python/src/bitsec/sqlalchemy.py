"""SQLAlchemy integration: ``EncryptedType``, a TypeDecorator that stores bitsec field tokens.

It replaces sqlalchemy-utils' ``EncryptedType`` (static IV, no key id, no rotation, no
associated data). Every value is encrypted with AES-256-GCM under the runtime's primary key
and bound to its slot: the context is built from the table, the column and the row's primary
key (and the tenant, when ``tenant_attribute`` is given)::

    "<table>.<column>|<primary key>[|<more primary key columns>][|<tenant>]"

(components escaped as :func:`bitsec.field_context` does). A token copied to another row,
column or tenant does not decrypt (``FieldWrongContextError``).

How the primary key gets into the context (the ORM does it; nothing to call):

- ``before_insert`` / ``before_update`` mapper events bind each changed plaintext to its
  context; the type then encrypts it in ``process_bind_param``. After the flush the object
  holds the plaintext again (``after_insert`` / ``after_update``).
- A primary key known before the INSERT (assigned in Python, a UUID, a sequence value) goes
  into the INSERT directly. A key the database generates (autoincrement) is only known after
  the INSERT: the row is inserted with NULL in the encrypted columns (they must be nullable)
  and ``after_insert`` issues one UPDATE with the tokens, in the same transaction.
- Loaded rows hold the token until the ``load`` / ``refresh`` event decrypts it with the
  row's own context, so attributes read as plaintext.
- Outside the ORM (Core ``insert()``), pass ``bound(value, context)`` as the value; a Core
  ``select()`` returns :class:`Sealed` tokens to ``.open(runtime, context)``.

Deterministic columns (``EncryptedType(rt, deterministic_context="equipment_records.serial_number")``)
use AES-SIV with that fixed context, so ``filter(Model.serial == "SN-1")`` works; equal values
are visible as equal in the database (list the context in ``fields.deterministic_contexts``).
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Union

from sqlalchemy import event, inspect
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import get_history, set_committed_value
from sqlalchemy.types import String, TypeDecorator

from .fields import field_context
from .runtime import Runtime

RuntimeSource = Union[Runtime, Callable[[], Runtime]]

__all__ = ["EncryptedType", "Sealed", "bound", "row_context"]


class Sealed:
    """A token read from the database, not yet decrypted (its context is the row's)."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def open(self, runtime: Runtime, context: str) -> bytes:
        return runtime.decrypt_field(self.token, context)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sealed) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)

    def __repr__(self) -> str:
        return "<bitsec.sqlalchemy.Sealed>"


class _Bound:
    """A plaintext with its context, on its way to process_bind_param."""

    __slots__ = ("value", "context")

    def __init__(self, value: Any, context: str) -> None:
        self.value = value
        self.context = context

    def __repr__(self) -> str:
        return "<bitsec.sqlalchemy.bound>"


class _Deferred:
    """A plaintext whose row key is not known yet (autoincrement): NULL now, UPDATE after."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<bitsec.sqlalchemy.deferred>"


def bound(value: Any, context: str) -> _Bound:
    """A value for Core statements: encrypted bound to ``context``."""
    return _Bound(value, context)


class EncryptedType(TypeDecorator[Any]):
    """Stores ``str`` (or ``bytes`` with ``python_type=bytes``) values as bitsec field tokens.

    ``runtime``: a :class:`bitsec.Runtime`, or a callable returning one (resolved at first
    use, e.g. ``lambda: app.state.bitsec``). ``tenant_attribute``: the mapped attribute whose
    value joins the context. ``deterministic_context``: makes the column deterministic
    (AES-SIV) and searchable by equality, under that fixed context.
    """

    impl = String
    cache_ok = True

    def __init__(self, runtime: RuntimeSource, *, python_type: type = str, tenant_attribute: str | None = None,
                 deterministic_context: str | None = None, length: int | None = None) -> None:
        super().__init__(length=length)
        if python_type not in (str, bytes):
            raise TypeError("python_type must be str or bytes")
        self.runtime = runtime
        self.value_type = python_type
        self.tenant_attribute = tenant_attribute
        self.deterministic_context = deterministic_context
        _register_events()

    def _rt(self) -> Runtime:
        r = self.runtime
        return r if isinstance(r, Runtime) else r()

    def _encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        raise TypeError(f"EncryptedType holds {self.value_type.__name__}, not {type(value).__name__}")

    def _decode(self, plaintext: bytes) -> Any:
        return plaintext.decode("utf-8") if self.value_type is str else plaintext

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None or isinstance(value, _Deferred):
            return None
        if isinstance(value, Sealed):
            return value.token
        if isinstance(value, _Bound):
            return self._rt().encrypt_field(self._encode(value.value), value.context,
                                            deterministic=self.deterministic_context is not None)
        if self.deterministic_context is not None:
            return self._rt().encrypt_field(self._encode(value), self.deterministic_context, deterministic=True)
        raise ValueError("an EncryptedType value is bound to its row: write it through the ORM (the mapper "
                         "events add the table, column and primary key) or pass bitsec.sqlalchemy.bound(value, context)")

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if self.deterministic_context is not None:
            return self._decode(self._rt().decrypt_field(value, self.deterministic_context))
        return Sealed(value)

    @property
    def python_type(self) -> type:
        return self.value_type


# ---- the context of a row ----------------------------------------------------------------

def _encrypted_columns(mapper: "Mapper[Any]") -> list[tuple[str, Any, EncryptedType]]:
    """(attribute key, column, type) of the row-bound encrypted columns of a mapper (cached)."""
    cached = _cache.get(mapper)
    if cached is not None:
        return cached
    out = []
    for prop in mapper.column_attrs:
        col = prop.columns[0]
        t = col.type
        if isinstance(t, EncryptedType) and t.deterministic_context is None:
            out.append((prop.key, col, t))
    _cache[mapper] = out
    return out


_cache: "weakref.WeakKeyDictionary[Mapper[Any], list[tuple[str, Any, EncryptedType]]]" = weakref.WeakKeyDictionary()


def row_context(mapper: "Mapper[Any]", target: Any, column: Any, t: EncryptedType) -> str | None:
    """The context of ``column`` in the row of ``target``; None while its key is unknown."""
    pk = mapper.primary_key_from_instance(target)
    if any(v is None for v in pk):
        return None
    parts: list[object] = [f"{column.table.name}.{column.name}", *pk]
    if t.tenant_attribute:
        parts.append(getattr(target, t.tenant_attribute))
    return field_context(*parts)


def _plain(value: Any) -> bool:
    return value is not None and not isinstance(value, (Sealed, _Bound, _Deferred))


def _before_flush_row(mapper: "Mapper[Any]", connection: Any, target: Any, inserting: bool) -> None:
    cols = _encrypted_columns(mapper)
    if not cols:
        return
    pending = target.__dict__.setdefault("_bitsec_plain", {})
    for key, col, t in cols:
        value = target.__dict__.get(key)
        if not _plain(value):
            continue
        if not inserting and not get_history(target, key).has_changes():
            continue
        ctx = row_context(mapper, target, col, t)
        pending[key] = value
        if ctx is None:
            if not inserting:
                raise ValueError(f"{mapper.class_.__name__}.{key}: the primary key is not set")
            setattr(target, key, _Deferred(value))
        else:
            setattr(target, key, _Bound(value, ctx))


def _after_flush_row(mapper: "Mapper[Any]", connection: Any, target: Any) -> None:
    pending = target.__dict__.pop("_bitsec_plain", None)
    if not pending:
        return
    updates = {}
    for key, col, t in _encrypted_columns(mapper):
        if key not in pending:
            continue
        value = pending[key]
        if isinstance(target.__dict__.get(key), _Deferred):
            ctx = row_context(mapper, target, col, t)
            if ctx is None:
                raise ValueError(f"{mapper.class_.__name__}.{key}: no primary key after the INSERT")
            updates[col] = Sealed(t._rt().encrypt_field(t._encode(value), ctx))
        set_committed_value(target, key, value)
    if updates:
        table = next(iter(updates)).table
        cond = [c == v for c, v in zip(mapper.primary_key, mapper.primary_key_from_instance(target))]
        connection.execute(table.update().where(*cond).values({c.name: v for c, v in updates.items()}))


def _open_loaded(target: Any, attrs: Any = None) -> None:
    mapper = inspect(target).mapper
    for key, col, t in _encrypted_columns(mapper):
        if attrs is not None and key not in attrs:
            continue
        value = target.__dict__.get(key)
        if isinstance(value, Sealed):
            ctx = row_context(mapper, target, col, t)
            if ctx is None:
                raise ValueError(f"{mapper.class_.__name__}.{key}: loaded without its primary key")
            set_committed_value(target, key, t._decode(value.open(t._rt(), ctx)))


_registered = False
_lock = threading.Lock()


def _register_events() -> None:
    global _registered
    with _lock:
        if _registered:
            return
        event.listen(Mapper, "before_insert", lambda m, c, t: _before_flush_row(m, c, t, True))
        event.listen(Mapper, "before_update", lambda m, c, t: _before_flush_row(m, c, t, False))
        event.listen(Mapper, "after_insert", _after_flush_row)
        event.listen(Mapper, "after_update", _after_flush_row)
        event.listen(Mapper, "load", lambda t, ctx: _open_loaded(t))
        event.listen(Mapper, "refresh", lambda t, ctx, attrs: _open_loaded(t, attrs))
        _registered = True
