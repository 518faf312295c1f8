"""The audit capability: ``rt.audit_emit``, ``rt.audit_flush``, ``rt.audit_stats``,
``rt.metrics_text``, the offline verifier ``audit_verify`` and ``AuditHandler``, a
``logging.Handler`` that forwards log records to the audit trail (issue 8; docs/audit.md).
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import contextvars
import ctypes
import json
import logging
import os
import re
import threading
import weakref
from ctypes import c_size_t, c_uint64, c_void_p
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TYPE_CHECKING, Union, cast

from . import _abi
from . import _native as N
from .errors import BitsecError, NotConfiguredError

_emit = N.declare("bitsec_audit_emit")
#: The hot path passes prebuilt C objects (thread-local below), skipping ctypes' conversion.
_emit_fast = N.unconverted(_emit)


class _EmitArgs(threading.local):
    def __init__(self) -> None:
        self.n = c_size_t(0)
        self.seq = c_uint64(0)
        self.seq_ref = ctypes.byref(self.seq)


_emit_args = _EmitArgs()
_submit = N.declare("bitsec_audit_submit")
_submit_fast = N.unconverted(_submit)
#: The most events one ``bitsec_audit_submit`` call takes (``audit_submit`` splits longer lists).
SUBMIT_MAX_EVENTS: int = _abi.BITSEC_AUDIT_SUBMIT_MAX_EVENTS
_MAX_ARGUMENT_BYTES: int = _abi.BITSEC_MAX_ARGUMENT_BYTES
_MAX_EVENT_BYTES: int = _abi.BITSEC_AUDIT_MAX_EVENT_BYTES
_flush = N.declare("bitsec_audit_flush")
_stats = N.declare("bitsec_audit_stats")
_metrics_text = N.declare("bitsec_metrics_text")
_verify = N.declare("bitsec_audit_verify")

# Compact, ASCII-only JSON (the C encoder's fastest path); bitsec reads \\u escapes.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_check = N.check

Event = Union[Mapping[str, Any], str, bytes]

log = logging.getLogger("bitsec")
_running_loop = asyncio.get_running_loop


# In ASCII JSON text: an escaped backslash (so that the text after it is never read as an
# escape), a surrogate pair (one character beyond the BMP: kept), or a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\\\|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|\\ud[89a-f][0-9a-f]{2}")


def _no_lone_surrogate(m: re.Match[str]) -> str:
    t = m.group()
    return t if len(t) != 6 else "\\ufffd"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
#: A surrogate pair's escape in ASCII JSON text (one character beyond the BMP).
_PAIR_ESCAPE = re.compile(r"\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}")
#: Every string of JSON text, in order (outside strings JSON has no quote), with the colon
#: that makes it a key.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"(:?)')


def _pair_in_a_key(text: str) -> bool:
    """Whether a key of the JSON text holds a surrogate pair's escape (a character beyond the
    BMP, which a key may also spell as two separate surrogates: then two keys collide). A
    value's pair, the common case of an emoji, leaves the text as it is, not parsed again."""
    for m in _JSON_STRING.finditer(text):
        if m.group(1) and "\\ud" in m.group() and _PAIR_ESCAPE.search(m.group()):
            return True
    return False


def _distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members with each lone surrogate of a key as U+FFFD, and a key that
    then equals an earlier one given a suffix (``~2``, ``~3``, ...): two keys that differ only
    in lone surrogates (a form's field names, echoed into ``details``), or a surrogate pair
    written as two characters and the character itself, stay two members, and the event is
    not refused for a duplicate key. Linear in the members: each base key keeps its next
    suffix."""
    out: dict[str, Any] = {}
    next_suffix: dict[str, int] = {}
    for k, v in pairs:
        if _LONE_SURROGATE.search(k):
            k = _LONE_SURROGATE.sub("\ufffd", k)
        if k in out:
            base = k
            n = next_suffix.get(base, 2)
            k = f"{base}~{n}"
            while k in out:
                n += 1
                k = f"{base}~{n}"
            next_suffix[base] = n + 1
        out[k] = v
    return out


def _ascii_json(text: str) -> bytes:
    """``json``'s ASCII text of a mapping as the bytes bitsec reads: a lone surrogate in one
    of its strings (keys too), which ``json`` writes as an escape bitsec's reader refuses --
    the whole event with it, a failed login lost for a crafted user name -- is U+FFFD; a key
    that then repeats another gets a suffix (``_distinct_keys``). Text over the library's
    event limit, or nested beyond what Python reads back, is left for the library to refuse
    (and record as refused)."""
    if "\\ud" in text:  # (a surrogate escape, or a backslash before "ud": rare, looked at closer)
        replaced = _SURROGATE_ESCAPE.sub(_no_lone_surrogate, text)
        if ((replaced != text or (_PAIR_ESCAPE.search(text) and _pair_in_a_key(text)))
                and len(text) <= _MAX_EVENT_TEXT):
            # (a lone surrogate, or a key's pair, which a key may spell as two characters: keys written
            # again, distinct)
            try:
                replaced = _SURROGATE_ESCAPE.sub(_no_lone_surrogate,
                                                 _encode(json.loads(text, object_pairs_hook=_distinct_keys)))
            except (RecursionError, ValueError):
                pass
        text = replaced
    return text.encode("ascii")


#: The longest event text bitsec reads (BITSEC_AUDIT_MAX_EVENT_BYTES).
_MAX_EVENT_TEXT = _abi.BITSEC_AUDIT_MAX_EVENT_BYTES


def _event_bytes(event: Event) -> bytes:
    """An event as the bytes bitsec reads: JSON text as given, a mapping encoded (a lone
    surrogate in its text replaced by U+FFFD)."""
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode("utf-8", "surrogatepass")  # lone surrogates: refused (and recorded) by bitsec
    try:
        if type(event) is dict:
            return _ascii_json(_encode(event))
        # another Mapping (or anything else: the library says what is wrong with it)
        return _ascii_json(_encode(dict(event) if isinstance(event, Mapping) else event))
    except RecursionError:
        # nested deeper than Python can encode (the library reads BITSEC_MAX_JSON_DEPTH
        # levels): a stand-in just as deep for the library to refuse, so that the refusal is
        # recorded (event_rejected) and a batch's other events are not lost with it
        return _TOO_DEEP


#: Valid JSON nested one level deeper than the library reads (``_event_bytes``).
_TOO_DEEP = (b'{"nested":' * (_abi.BITSEC_MAX_JSON_DEPTH + 1) + b"0" + b"}" * (_abi.BITSEC_MAX_JSON_DEPTH + 1))


class _Soon:
    """A runtime's audit work that runs at the end of the event loop's turn (``_audit_soon``).
    Appending takes no lock (``deque.append`` is atomic); a run takes ``order`` and pops until
    the queue is empty, so each item runs once, in the order it came. An item returns its
    event's JSON text (or None: nothing to record); the run hands the texts to bitsec in one
    ``bitsec_audit_submit`` call, in the order they came."""

    __slots__ = ("items", "order", "loop", "runtime", "absent", "__weakref__")

    #: Items that make the appending call run the batch itself (a loop that never yields).
    HAND_OVER_AT = 256

    def __init__(self, rt: "AuditMixin") -> None:
        self.items: collections.deque[tuple[Callable[..., str | None], tuple[Any, ...]]] = collections.deque()
        self.order = threading.RLock()  # one run at a time (an item's own emit may flush)
        self.loop: Any = None           # the loop a run is scheduled on (None: none is)
        self.runtime = weakref.ref(rt)  # (no cycle: the runtime holds this queue)
        self.absent = False             # the runtime has no audit section: nothing to record
        global _atexit_registered
        if not _atexit_registered:
            # Registered after the runtime's finalizer (weakref.finalize registers its exit hook
            # at the first runtime): exit hooks run last first, so this runs before the runtime
            # is closed at exit.
            atexit.register(_run_all_soon)
            _atexit_registered = True
        _ALL_SOON.add(self)

    def run(self, wait: bool, rt: "AuditMixin | None" = None) -> None:
        """Runs what waits, in order. ``wait``: also when nothing waits, to wait for a run in
        progress on another thread, whose items it already took (``audit_flush`` and the others
        that promise what was handed over before them). ``rt``: the runtime, held by the
        scheduled run so that a runtime nothing else holds still hands over what waits."""
        # Before looking: an item appended from now on schedules a run of its own, also when
        # this one (the scheduled run, finding the queue emptied by another thread) ends here.
        self.loop = None
        if not wait and not self.items:
            return
        with self.order:
            items = self.items
            pop = items.popleft  # (only a run pops, and runs hold ``order``: a non-empty queue stays so)
            texts: list[str] = []
            while items:
                fn, args = pop()
                try:
                    text = fn(*args)
                except Exception:  # fn reports its own failures; this is a bug, never a lost batch
                    log.exception("bitsec: deferred audit work failed")
                    continue
                if type(text) is str:  # (an item that emitted by itself returns something else)
                    texts.append(text)
                    if len(texts) >= SUBMIT_MAX_EVENTS:
                        self._hand_over(texts, rt)
                        texts = []
            if texts:
                self._hand_over(texts, rt)

    def _hand_over(self, texts: list[str], rt: "AuditMixin | None" = None) -> None:
        if rt is None:
            rt = self.runtime()
        if rt is None:  # (a scheduled run holds its runtime; this is a run after it was collected)
            log.warning("bitsec audit: %d request records not handed over: the runtime is gone", len(texts))
            return
        try:
            rt.audit_submit(texts)
        except NotConfiguredError:
            self.absent = True  # no audit section: later items are not even written
        except BitsecError as e:
            # the runtime closed meanwhile, or a forked child without a shared file sink (the
            # library counted the records as dropped): never raised into a request
            log.warning("bitsec audit: %d request records not handed over: %s", len(texts), e)

    def after_fork_in_child(self) -> None:
        """What waits is the parent's requests, which the parent records; the lock may have
        been held by a thread of the parent that the child does not have."""
        self.items.clear()
        self.order = threading.RLock()
        self.loop = None
        self.absent = False


#: Every runtime's queue: reset in a forked child, run at interpreter exit (a runtime that is
#: never closed still hands over what waits).
_ALL_SOON: "weakref.WeakSet[_Soon]" = weakref.WeakSet()


def _run_all_soon() -> None:
    for soon in list(_ALL_SOON):
        soon.run(wait=True)


def _reset_all_soon_in_child() -> None:
    for soon in list(_ALL_SOON):
        soon.after_fork_in_child()


os.register_at_fork(after_in_child=_reset_all_soon_in_child)
_atexit_registered = False


@dataclass(frozen=True)
class AuditProblem:
    """The first problem the verifier found."""

    kind: str  #: edited, deleted, inserted or reordered
    file: str
    line: int
    seq: int | None
    detail: str


@dataclass(frozen=True)
class AuditVerifyReport:
    """What ``audit_verify`` found. ``intact`` is False when ``problem`` is set."""

    intact: bool
    records: int
    files: list[str]
    first_seq: int
    last_seq: int
    last_hash: str
    chain: str
    torn_tail: dict[str, Any] | None = None
    problem: AuditProblem | None = None
    #: Events refused by validation / dropped on a full queue, as the trail's own
    #: ``audit``/``event_rejected`` and ``audit``/``events_dropped`` records count them.
    events_rejected: int = 0
    events_dropped: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def audit_verify(paths: Iterable[Union[str, "os.PathLike[str]"]], key: bytes | None = None) -> AuditVerifyReport:
    """Verifies audit files (rotated ones and the current one, in any order): hashes, links
    and sequence numbers. ``key`` is the trail's ``hmac_key`` bytes when it is keyed.
    Raises ``BitsecIOError`` when a file cannot be read; tampering is a report, not an error."""
    plist = [os.fsdecode(p) for p in paths]
    data = json.dumps(plist).encode("utf-8")
    k = bytes(key) if key else None
    out = N.call_with_output(_verify, data, len(data), k, len(k) if k else 0, initial=4096)
    r = json.loads(out)
    p = r.get("problem")
    return AuditVerifyReport(
        intact=r["intact"], records=r["records"], files=r["files"], first_seq=r["first_seq"],
        last_seq=r["last_seq"], last_hash=r["last_hash"], chain=r["chain"], torn_tail=r.get("torn_tail"),
        problem=AuditProblem(p["kind"], p["file"], p["line"], p.get("seq"), p["detail"]) if p else None,
        events_rejected=int(r.get("events_rejected", 0)), events_dropped=int(r.get("events_dropped", 0)), raw=r)


class AuditMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    if TYPE_CHECKING:
        @property
        def handle(self) -> int: ...

    def audit_emit(self, event: Event) -> int | None:
        """Emits a security event (a mapping, or its JSON as ``str``/``bytes``).

        Returns the record's sequence number, or None when the queue was full and the drop
        policy dropped it (counted and reported). Raises ``InvalidArgumentError``,
        ``MalformedError`` or ``TooLargeError`` for a rejected event (the message says why;
        the refusal itself is recorded as an ``audit``/``event_rejected`` record, coalesced per
        ``rejected_interval_ms``; text over a member's limit is cut down, not refused),
        ``BitsecTimeoutError`` when the block policy timed out (or, in every_event mode, the
        record is not confirmed durable in time), ``NotConfiguredError`` without an audit
        section, ``UnsupportedError`` in a child after ``fork()`` when the file sink is not
        ``shared`` (the message names the remedy). Never waits on disk or network except in
        every_event mode. With a shared file sink outside every_event mode the record's
        number is not known yet and the event's local number in this runtime is returned."""
        data = _event_bytes(event)
        a = _emit_args
        a.n.value = len(data)
        rc = _emit_fast(c_void_p(self.handle), data, a.n, a.seq_ref)
        if rc:
            _check(rc)
        return a.seq.value or None

    def audit_submit(self, events: Iterable[Event]) -> int:
        """Hands many events (mappings, or their JSON as ``str``/``bytes``) to the audit trail,
        in as few native calls as ``bitsec_audit_submit``'s limits allow (4096 events and
        16 MiB a call): bitsec's writer thread validates, stamps and records each as
        ``audit_emit`` would, off the calling thread. Never waits, so the trail must use the
        ``drop`` policy outside ``every_event`` mode (else ``UnsupportedError``). An event the
        library refuses leaves an ``audit``/``event_rejected`` record in its place (counted in
        ``audit_stats()["rejected"]``; one over ``BITSEC_AUDIT_MAX_EVENT_BYTES`` is refused for
        its size without being passed on whole); it raises nothing here. Returns how many were
        queued (the others were dropped for room: counted, and reported by an
        ``audit``/``events_dropped`` record). Raises ``NotConfiguredError`` without an audit
        section, ``ClosedError``, ``UnsupportedError``; a mapping ``json`` cannot encode raises
        before anything is queued; an error of a later call leaves the earlier calls' events
        queued."""
        if type(events) is not list:
            events = list(events)
        if not events:
            return 0
        if len(events) <= SUBMIT_MAX_EVENTS:
            # JSON texts (the request records of an event-loop turn): ASCII as
            # ``bitsec.fastapi`` writes them, so encoded in one piece
            try:
                data = "".join(events)  # type: ignore[arg-type]
            except TypeError:  # not all str: each encoded below
                data = None
            if data is not None and len(data) <= _MAX_ARGUMENT_BYTES and data.isascii():
                return self._submit_joined(data.encode("ascii"), (c_size_t * len(events))(*map(len, events)))
        parts = [_event_bytes(e) for e in events]
        accepted = 0
        chunk: list[bytes] = []
        size = 0
        for b in parts:
            if len(b) > _MAX_EVENT_BYTES:
                b = b[:_MAX_EVENT_BYTES + 1]  # refused for its size all the same: the rest is never read
            if chunk and (len(chunk) == SUBMIT_MAX_EVENTS or size + len(b) > _MAX_ARGUMENT_BYTES):
                accepted += self._submit_joined(b"".join(chunk), (c_size_t * len(chunk))(*map(len, chunk)))
                chunk, size = [], 0
            chunk.append(b)
            size += len(b)
        if chunk:
            accepted += self._submit_joined(b"".join(chunk), (c_size_t * len(chunk))(*map(len, chunk)))
        return accepted

    def _submit_joined(self, data: bytes, lengths: Any) -> int:
        out = c_size_t(0)
        # the exact C types of the prototype (``_submit_fast`` converts nothing): the lengths
        # are a ``c_size_t`` array, passed as its pointer
        rc = _submit_fast(c_void_p(self.handle), data, c_size_t(len(data)), lengths, c_size_t(len(lengths)),
                          ctypes.byref(out))
        if rc:
            _check(rc)
        return out.value

    def _audit_soon(self, fn: Callable[..., str | None], *args: Any) -> None:
        """Writes a request record (``bitsec.fastapi``, when an emit cannot wait) at the end
        of the running event loop's current turn, in one batch with that turn's others:
        ``fn(*args)`` returns the event's JSON text (None: nothing to record), and the batch's
        texts go to bitsec in one ``bitsec_audit_submit`` call, validated by its writer
        thread, off the event loop (BENCHMARKS.md, HTTP). Written back to back, the event
        text's code stays in the CPU's caches too. Without a running event loop it is written
        and emitted now; with ``_Soon.HAND_OVER_AT`` waiting, the caller runs the batch.
        ``audit_flush``, ``audit_stats``, ``metrics_text`` and ``close`` run what is waiting
        first, on the thread that calls them; the batch at the end of the turn runs on the
        loop's thread in an empty ``contextvars`` context (no request's). An error of ``fn``
        is logged; one of the hand-over is logged once per batch (without an audit section,
        nothing more is written)."""
        soon: _Soon | None = self.__dict__.get("_soon")
        if soon is None:
            soon = self.__dict__.setdefault("_soon", _Soon(self))
        if soon.absent:
            return
        try:
            loop = _running_loop()
        except RuntimeError:
            try:
                text = fn(*args)
            except Exception:
                log.exception("bitsec: deferred audit work failed")
                return
            if type(text) is str:
                soon._hand_over([text])
            return
        items = soon.items
        items.append((fn, args))
        # after the append: a run that already reset ``loop`` either pops this item or
        # left ``loop`` None, and then this schedules another run
        if soon.loop is not loop:
            soon.loop = loop
            loop.call_soon(soon.run, False, self, context=contextvars.Context())
        elif len(items) >= _Soon.HAND_OVER_AT:
            soon.run(False)

    def _audit_run_soon(self, wait: bool = False) -> None:
        """Runs the waiting ``_audit_soon`` work, in the order it came, on this thread
        (``_Soon.run``)."""
        soon: _Soon | None = self.__dict__.get("_soon")
        if soon is not None:
            soon.run(wait)

    def audit_flush(self) -> None:
        """Returns once every event emitted before the call is durable (the request records
        ``bitsec.fastapi`` hands over at the end of the event loop's turn included)."""
        self._audit_run_soon(wait=True)
        _check(_flush(self.handle))

    def audit_stats(self) -> dict[str, Any]:
        """Queue and sink state: queued, capacity, last_seq, durable_seq, dropped, sink_errors, ..."""
        self._audit_run_soon(wait=True)
        return cast("dict[str, Any]", json.loads(N.call_with_output(_stats, self.handle)))

    def metrics_text(self) -> str:
        """The Prometheus text exposition of the runtime's metrics: audit counters, the bounded
        tables' gauges and counters, and the latency histograms of this process
        (``bitsec_operation_duration_seconds{operation,pid}``, ``bitsec_redis_roundtrip_seconds``;
        the ``metrics`` configuration section). ``bitsec.prometheus.BitsecCollector`` feeds it
        to a ``prometheus_client`` registry; ``bitsec.fastapi.metrics_router`` serves it."""
        self._audit_run_soon(wait=True)
        # 128 KiB: the text with every latency histogram fits, so a scrape is one native call
        return N.call_with_output(_metrics_text, self.handle, initial=1 << 17).decode("utf-8")


# LogRecord attributes that are not "extra" fields.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}

# ADR-007 / ERP field names a log record may carry as extras, and their schema names.
_EXTRA_TO_SCHEMA = {
    "event_type": "type", "event_subtype": "subtype", "user_id": "actor", "actor": "actor",
    "tenant_id": "tenant", "tenant": "tenant", "ip_address": "ip", "ip": "ip",
    "user_agent": "user_agent", "session_id": "session_id", "success": "success",
    "result": "result", "failure_reason": "reason", "reason": "reason", "severity": "severity",
    "resource": "resource", "resource_id": "resource_id", "action": "action", "operation": "action",
    "sensitive_data_accessed": "sensitive_data_accessed", "data_classification": "data_classification",
}


class AuditHandler(logging.Handler):
    """A ``logging.Handler`` that forwards records to a runtime's audit trail.

    A record that carries ``extra={"audit": {...}}`` is emitted as that event. Otherwise the
    record's extras are mapped (ADR-007's ``event_type``, ``event_subtype``, ``user_id``,
    ``ip_address``, ``success``, ``failure_reason``, ``resource``, ``action``, ``result``,
    ``operation``, ``sensitive_data_accessed``, ...; ``table_name``/``record_id`` become
    ``resource``/``resource_id``), the remaining extras go into ``details`` together with the
    message, logger and level. Records without an ``event_type`` get ``event_type`` (default
    ``application``) and subtype ``log``. ``timestamp`` extras are ignored: bitsec stamps
    time. A rejected event goes through ``handleError`` like any handler failure.
    """

    def __init__(self, runtime: AuditMixin, event_type: str = "application", level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.runtime = runtime
        self.event_type = event_type

    def to_event(self, record: logging.LogRecord) -> dict[str, Any]:
        d = record.__dict__
        audit = d.get("audit")
        if isinstance(audit, Mapping):
            return dict(audit)
        event: dict[str, Any] = {}
        details: dict[str, Any] = {}
        for k, v in d.items():
            if k in _STANDARD_ATTRS or k == "timestamp" or v is None:
                continue
            target = _EXTRA_TO_SCHEMA.get(k)
            if target is not None:
                event[target] = v
            elif k == "table_name":
                event.setdefault("resource", v)
            elif k == "record_id":
                event.setdefault("resource_id", str(v))
            else:
                details[k] = v
        event.setdefault("type", self.event_type)
        if event["type"] == self.event_type and "subtype" not in event:
            event["subtype"] = "log"
        details["message"] = record.getMessage()
        details["logger"] = record.name
        details["level"] = record.levelname
        event["details"] = details
        return event

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = self.to_event(record)
            data = _ascii_json(json.dumps(event, separators=(",", ":"), default=str))
            self.runtime.audit_emit(data)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        try:
            self.runtime.audit_flush()
        except Exception:
            pass
