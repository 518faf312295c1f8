"""The permissions capability's methods of ``bitsec.Runtime``: check_permission and its
batch form, load_policy / load_shadow_policy, permission_stats (issue 4).

A decision costs one C call. The principal is packed once (``Principal`` keeps its packed
bytes; a claims dict is packed per call), decisions are cached per 64-bit decision value
(``Decision`` objects are immutable and shared), and rule texts are fetched once per rule.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import threading
from ctypes import POINTER, c_char_p, c_int32, c_size_t, c_uint64, c_void_p
from typing import Any, Iterable, Mapping, Sequence, TYPE_CHECKING, Union, cast

from . import _abi
from . import _native as N
from . import errors as bitsec_errors
from .errors import BitsecError, InvalidArgumentError, NotFoundError, TooLargeError

_check = N.declare("bitsec_check_permission")
_check_packed = N.declare("bitsec_check_permission_packed")
# The hot path calls the same C function through a second, argtypes-free pointer with
# arguments that are already C-typed (a c_void_p handle, bytes, a small int, a byref):
# ctypes' per-argument from_param conversion costs more than the decision itself
# (measured: 2.5 us with argtypes vs 1.4 us without, for these four arguments). Lengths
# passed this way are ints below 2**31 (ctypes sign-extends them to the size_t register);
# the request is at most 64 KiB, larger ones are refused before the call.
_check_packed_fast = N.unconverted(_check_packed)
_check_claims = N.declare("bitsec_check_permission_claims")
_check_batch = N.declare("bitsec_check_permissions")
_rule = N.declare("bitsec_permission_rule")
_reason = N.declare("bitsec_permission_reason_name")
# The deprecated C names of renamed functions (exported for the rest of ABI version 1): declared
# so that every export of the header has its prototype here; never called.
N.declare("bitsec_permission_reason")
_policy_load = N.declare("bitsec_permission_policy_load")
_shadow_load = N.declare("bitsec_permission_shadow_load")
_stats = N.declare("bitsec_permission_stats")

#: Reason code -> reason text (BITSEC_PERM_* in include/bitsec.h).
REASONS: dict[int, str] = {
    code: (_reason(code) or b"").decode() for name, code in vars(_abi).items()
    if name.startswith("BITSEC_PERM_") and isinstance(code, int)
}
MAX_BATCH: int = _abi.BITSEC_MAX_PERMISSION_BATCH
MAX_REQUEST: int = _abi.BITSEC_MAX_PRINCIPAL_BYTES
_SEPARATORS = (" ", ",", "\t", "\n")
_BATCH_FORBIDDEN = re.compile(r"[ ,\t\0]")


class PermissionDeniedError(BitsecError, PermissionError):
    """Raised by ``Runtime.require_permission``; ``decision`` says why."""

    code = -1

    def __init__(self, decision: "Decision", permission: str) -> None:
        self.decision = decision
        self.permission = permission
        super().__init__(f"Insufficient permissions: {permission}")


class Decision:
    """An authorization decision: truthy when allowed. ``reason`` is the stable reason code
    text (``granted``, ``no_grant``, ``denied_by_rule``, ``condition_failed:owner_only``,
    ``condition_failed:department``, ``tenant_mismatch``, ``scope_missing``,
    ``unknown_resource``, ``unknown_action``); ``rule`` the text of the deciding rule or None.
    Instances are shared between calls: treat them as immutable."""

    __slots__ = ("allowed", "reason", "rule", "raw")

    def __init__(self, raw: int, rule: str | None) -> None:
        self.raw = raw
        self.allowed = bool(raw & 1)
        self.reason = REASONS.get((raw >> 8) & 0xFF, "unknown")
        self.rule = rule

    def __bool__(self) -> bool:
        return self.allowed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Decision(allowed={self.allowed}, reason={self.reason!r}, rule={self.rule!r})"


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _names(value: Any, what: str) -> str:
    """A list of names (or one string of names separated by spaces/commas) as one field."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    out = []
    for v in value:
        if not isinstance(v, str):
            raise TypeError(f"{what} entries must be str, not {type(v).__name__}")
        if any(s in v for s in _SEPARATORS):
            raise InvalidArgumentError(f"{what} entry {v!r} contains a separator")
        out.append(v)
    return " ".join(out)


class Principal:
    """Who asks: id, roles, scopes (None: the principal carries no scopes, roles alone
    decide), tenant and department. Packed once for the C call; reuse it across checks."""

    __slots__ = ("id", "roles", "scopes", "tenant", "department", "_packed", "_tail")

    def __init__(self, id: str = "", roles: Union[str, Iterable[str]] = (), scopes: Union[str, Iterable[str], None] = None,
                 tenant: str | None = None, department: str | None = None) -> None:
        self.id = _text(id, "id")
        self.roles = _names(roles, "roles")
        self.scopes = None if scopes is None else _names(scopes, "scopes")
        self.tenant = _text(tenant, "tenant")
        self.department = _text(department, "department")
        fields = [self.id, self.roles, self.tenant, self.department]
        if self.scopes is not None:
            fields.append(self.scopes)
        packed = "\0".join(fields).encode("utf-8")
        if packed.count(b"\0") != len(fields) - 1:
            raise InvalidArgumentError("principal fields must not contain NUL")
        self._packed = packed
        self._tail = b"\0" + packed  # appended to "resource:action" for the packed call

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> "Principal":
        """From a verified token's claims: ``sub`` (or ``user_id``); ``roles`` (list or
        string) and ``role``; ``scope`` (OAuth2, space-separated), ``scopes`` or ``scp``;
        ``tenant_id`` (or ``tenant``); ``department``. A role value that contains a separator
        cannot name a policy role and is dropped."""
        pid, roles, scopes, tenant, department = _claims_fields(claims)
        return cls(pid, roles, scopes, tenant, department)

    def __repr__(self) -> str:
        return (f"Principal(id={self.id!r}, roles={self.roles!r}, scopes={self.scopes!r}, "
                f"tenant={self.tenant!r}, department={self.department!r})")


PrincipalLike = Union[Principal, Mapping[str, Any], bytes]
_SEPARATOR_RE = re.compile(r"[ ,\t\n]")


def _claims_fields(claims: Mapping[str, Any]) -> tuple[str, str, str | None, str, str]:
    """(id, roles, scopes or None, tenant, department) from a claims mapping."""
    get = claims.get
    pid = get("sub") or get("user_id") or ""
    if not isinstance(pid, str):
        pid = str(pid)
    roles = []
    for v in (get("roles"), get("role")):
        if v is None:
            continue
        for r in ((v,) if type(v) is str else v):
            if type(r) is str and r and not _SEPARATOR_RE.search(r):
                roles.append(r)
    scopes: str | None = None
    for key in ("scope", "scopes", "scp"):
        v = get(key)
        if v is not None:
            scopes = v if type(v) is str else " ".join(x for x in v if type(x) is str)
            break
    tenant = get("tenant_id")
    if tenant is None:
        tenant = get("tenant")
    department = get("department")
    return (pid, " ".join(roles), scopes, tenant if type(tenant) is str else "",
            department if type(department) is str else "")


def _tail_from_claims(claims: Mapping[str, Any]) -> bytes:
    pid, roles, scopes, tenant, department = _claims_fields(claims)
    text = f"\0{pid}\0{roles}\0{tenant}\0{department}" if scopes is None else f"\0{pid}\0{roles}\0{tenant}\0{department}\0{scopes}"
    tail = text.encode("utf-8")
    if tail.count(b"\0") != (4 if scopes is None else 5):
        raise InvalidArgumentError("principal fields must not contain NUL")
    return tail
_CONTEXT_KEYS = frozenset({"owner_id", "tenant_id", "department"})


def _principal_tail(p: Any) -> bytes:
    if isinstance(p, Principal):
        return p._tail
    if isinstance(p, Mapping):
        return _tail_from_claims(p)
    raise TypeError(f"principal must be a bitsec.Principal or a claims mapping, not {type(p).__name__}")


def _packed_principal(p: Any) -> bytes:
    if type(p) is Principal:
        return p._packed
    if isinstance(p, Principal):
        return p._packed
    if isinstance(p, Mapping):
        return Principal.from_claims(p)._packed
    raise TypeError(f"principal must be a bitsec.Principal or a claims mapping, not {type(p).__name__}")


def _packed_context(c: Mapping[str, Any] | None) -> bytes | None:
    """``{"owner_id", "tenant_id", "department"}`` of the resource (each optional)."""
    if not c:
        return None
    extra = set(c) - _CONTEXT_KEYS
    if extra:
        raise InvalidArgumentError(f"unknown context keys {sorted(extra)}; expected owner_id, tenant_id, department")
    fields = [_text(c.get("owner_id"), "owner_id"), _text(c.get("tenant_id"), "tenant_id"), _text(c.get("department"), "department")]
    packed = "\0".join(fields).encode("utf-8")
    if packed.count(b"\0") != 2:
        raise InvalidArgumentError("context fields must not contain NUL")
    if len(packed) > _abi.BITSEC_MAX_PRINCIPAL_BYTES:
        raise TooLargeError(f"context: {len(packed)} bytes exceeds the limit of {_abi.BITSEC_MAX_PRINCIPAL_BYTES}")
    return packed


def _policy_bytes(policy: Any) -> bytes:
    if isinstance(policy, Mapping):
        return json.dumps(policy).encode("utf-8")
    if isinstance(policy, bytes):
        return policy
    if isinstance(policy, str) and policy.lstrip().startswith("{"):
        return policy.encode("utf-8")
    if isinstance(policy, (str, os.PathLike)):
        with open(policy, "rb") as f:
            return f.read()
    raise TypeError(f"policy must be a mapping, JSON text or a path, not {type(policy).__name__}")


class PermissionsMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...
    _perm_tls: threading.local
    _perm_cache: dict[int, Decision]
    _perm_names: dict[Any, bytes]

    def _perm_state(self) -> Any:
        try:
            return self._perm_tls
        except AttributeError:
            self._perm_cache = {}
            self._perm_names = {}
            self._perm_handle = ctypes.c_void_p(self.handle)
            self._perm_tls = threading.local()
            return self._perm_tls

    def _check_claims_json(self, claims: bytes, perm: bytes, context: Mapping[str, Any] | None, out: Any, ref: Any) -> Decision:
        """The claims as raw JSON bytes (as a token verifier returns them): parsed in C."""
        c = _packed_context(context)
        N.check(_check_claims(self.handle, claims, len(claims), perm, len(perm), c, len(c) if c else 0, ref))
        raw = out.value
        d = self._perm_cache.get(raw)
        return d if d is not None else self._decision(raw)

    def _perm_slot(self) -> tuple[Any, Any]:
        """This thread's output cell for decisions (ctypes releases the GIL during calls)."""
        tls = self._perm_state()
        out = c_uint64(0)
        slot = (out, ctypes.byref(out))
        tls.slot = slot
        return slot

    def _decision(self, raw: int) -> Decision:
        d = self._perm_cache.get(raw)
        if d is None:
            rule: str | None = None
            if raw >> 32:
                try:
                    rule = N.call_with_output(_rule, self.handle, raw, initial=256).decode("utf-8")
                except NotFoundError:
                    rule = None
            d = Decision(raw, rule)
            if len(self._perm_cache) > 65536:
                self._perm_cache.clear()
            self._perm_cache[raw] = d
        return d

    def _permission_bytes(self, resource: str, action: str | None) -> bytes:
        key = resource if action is None else (resource, action)
        names = self._perm_names
        b = names.get(key)
        if b is None:
            text = resource if action is None else f"{resource}:{action}"
            if not isinstance(text, str):
                raise TypeError("resource and action must be str")
            b = text.encode("utf-8")
            if b"\0" in b:
                raise InvalidArgumentError("permission must not contain NUL")
            if len(names) > 4096:
                names.clear()
            names[key] = b
        return b

    def check_permission(self, principal: PrincipalLike, resource: str, action: str | Mapping[str, Any] | None = None,
                         context: Mapping[str, Any] | None = None) -> Decision:
        """Decides ``resource:action`` (or ``resource``, ``action``) for ``principal`` (a
        ``Principal``, the claims dict of ``verify_token``, or verified claims as JSON bytes). ``context``: the resource's
        ``owner_id``, ``tenant_id`` and ``department``. Returns a ``Decision`` (truthy when
        allowed); never raises for a denial, unknown resource or unknown action."""
        if action is not None and type(action) is not str:
            if context is not None or not isinstance(action, Mapping):
                raise TypeError("action must be a str")
            context, action = action, None  # check_permission(p, "r:a", {...})
        try:
            out, ref = self._perm_tls.slot
        except AttributeError:
            out, ref = self._perm_slot()
        perm = self._perm_names.get(resource if action is None else (resource, action)) or self._permission_bytes(resource, action)
        if type(principal) is Principal:
            tail = principal._tail
        elif isinstance(principal, (bytes, bytearray)):
            return self._check_claims_json(bytes(principal), perm, context, out, ref)
        else:
            tail = _principal_tail(principal)
        req = perm + tail
        if context:
            req += b"\0" + _packed_context(context)  # type: ignore[operator]
        n = len(req)
        if n > MAX_REQUEST:
            raise bitsec_errors.TooLargeError(f"request of {n} bytes exceeds {MAX_REQUEST}")
        # A closed runtime answers BITSEC_E_CLOSED (its handle object is never freed).
        rc = _check_packed_fast(self._perm_handle, req, n, ref)
        if rc:
            N.check(rc)
        raw = out.value
        d = self._perm_cache.get(raw)
        return d if d is not None else self._decision(raw)

    def require_permission(self, principal: PrincipalLike, resource: str, action: str | Mapping[str, Any] | None = None,
                           context: Mapping[str, Any] | None = None) -> Decision:
        """As ``check_permission``, raising ``PermissionDeniedError`` (a ``PermissionError``)
        when denied; its message is the 403 detail ``Insufficient permissions: r:a``."""
        d = self.check_permission(principal, resource, action, context)
        if not d.allowed:
            raise PermissionDeniedError(d, f"{resource}:{action}" if isinstance(action, str) else resource)
        return d

    def check_permissions(self, principal: PrincipalLike, permissions: Iterable[Union[str, Sequence[str]]],
                          context: Mapping[str, Any] | None = None) -> list[Decision]:
        """Decides many permissions (``"r:a"`` strings or ``(r, a)`` pairs) in one call, in
        order, all against one policy. Batch denials are not audited one by one."""
        self._perm_state()
        items = [p if type(p) is str else f"{p[0]}:{p[1]}" for p in permissions]
        if len(items) > MAX_BATCH:
            raise InvalidArgumentError(f"at most {MAX_BATCH} permissions per batch")
        if not items:
            return []
        text = "\n".join(items)
        if _BATCH_FORBIDDEN.search(text) or text.count("\n") != len(items) - 1:
            raise InvalidArgumentError("a permission of the batch contains a separator (space, comma, tab, newline or NUL)")
        data = text.encode("utf-8")
        p = _packed_principal(principal)
        c = _packed_context(context)
        out = (c_uint64 * len(items))()
        n = c_size_t(0)
        N.check(_check_batch(self.handle, p, len(p), data, len(data), c, len(c) if c else 0, out, len(items), ctypes.byref(n)))
        cache = self._perm_cache
        return [cache.get(raw) or self._decision(raw) for raw in out[: n.value]]

    def load_policy(self, policy: Union[Mapping[str, Any], str, bytes, "os.PathLike[str]"]) -> None:
        """Replaces the active policy atomically (a dict, JSON text or a file path). On a
        ``ConfigError`` the active policy stays."""
        data = _policy_bytes(policy)
        self._perm_state()
        N.check(_policy_load(self.handle, data, len(data)))
        self._perm_cache.clear()

    def load_shadow_policy(self, policy: Union[Mapping[str, Any], str, bytes, "os.PathLike[str]", None]) -> None:
        """Sets the candidate policy evaluated beside the active one (None removes it)."""
        data = b"" if policy is None else _policy_bytes(policy)
        N.check(_shadow_load(self.handle, data or None, len(data)))

    def permission_stats(self) -> dict[str, Any]:
        """Counters (unknown_roles, shadow_decisions, shadow_disagreements, reloads) and the
        compiled policies' sizes."""
        return cast("dict[str, Any]", json.loads(N.call_with_output(_stats, self.handle, initial=512)))


def permission_reason(code: int) -> str:
    """The text of a reason code (from the library)."""
    return (_reason(code) or b"").decode()
