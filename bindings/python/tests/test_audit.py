"""The audit capability through the Python binding: emit, reject, handler, metrics, verify,
tamper detection, crash durability (SIGKILL), the Redis stream sink."""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from redis_modes import REDIS_MODES, redis_client, redis_section

import bitsec
from bitsec import (AuditHandler, BitsecIOError, InvalidArgumentError, MalformedError, NotConfiguredError, TooLargeError,
                    audit_verify)


def runtime(path: Path, **section) -> bitsec.Runtime:
    sec = {"sinks": [{"type": "file", "path": str(path)}]}
    sec.update(section)
    return bitsec.Runtime({"audit": sec})


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def trail(tmp_path: Path, n: int = 10) -> tuple[Path, list[str]]:
    p = tmp_path / "audit.log"
    with runtime(p) as rt:
        for k in range(n):
            rt.audit_emit({"type": "session", "subtype": "s", "actor": f"u{k}"})
    return p, p.read_text().splitlines()


def test_emit_dict_str_bytes_and_schema(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    with runtime(p, service="erp-api") as rt:
        assert rt.audit_emit({"type": "authentication", "event_subtype": "failed_login", "success": False,
                              "user_id": "alice", "ip_address": "203.0.113.7", "failure_reason": "bad_password"}) == 2
        assert rt.audit_emit('{"type": "login_success", "user_id": "bob"}') == 3
        assert rt.audit_emit(b'{"type": "data_access", "operation": "read", "sensitive_data_accessed": true}') == 4
        assert rt.audit_emit({"type": "security_incident", "severity": "critical", "details": {"é": "ünïcode"}}) == 5
        rt.audit_flush()
        st = rt.audit_stats()
        assert st["durable_seq"] == 5 and st["dropped"] == 0
    recs = records(p)
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5, 6]
    r = recs[1]
    assert (r["type"], r["subtype"], r["result"], r["actor"], r["ip"], r["reason"], r["service"]) == (
        "authentication", "failed_login", "failure", "alice", "203.0.113.7", "bad_password", "erp-api")
    assert r["time"].endswith("Z") and len(r["time"]) == 27 and r["time"][19] == "."
    assert len(r["id"]) == 36 and len(r["hash"]) == 64 and r["prev"] == recs[0]["hash"]
    assert recs[2]["subtype"] == "login" and recs[2]["result"] == "success"
    assert recs[3]["subtype"] == "read" and recs[3]["sensitive_data_accessed"] is True
    assert recs[4]["details"] == {"é": "ünïcode"}
    assert recs[0]["subtype"] == "started" and recs[-1]["subtype"] == "stopped"


def test_bad_events_are_rejected_with_reasons(tmp_path: Path) -> None:
    with runtime(tmp_path / "a.log", max_event_bytes=1024, max_depth=4) as rt:
        with pytest.raises(MalformedError, match="invalid JSON"):
            rt.audit_emit('{"type": "session",')
        # Too large is cut down, not refused (test_audit_limits_http.py).
        assert rt.audit_emit({"type": "session", "details": {"blob": "x" * 5000}})
        with pytest.raises(TooLargeError, match="1048576 bytes"):
            rt.audit_emit(b" " * ((1 << 20) + 1))
        with pytest.raises(MalformedError, match="max_depth"):
            rt.audit_emit({"type": "session", "details": {"a": {"b": {"c": {"d": 1}}}}})
        with pytest.raises(InvalidArgumentError, match="not a known type"):
            rt.audit_emit({"type": "lunch"})
        with pytest.raises(InvalidArgumentError, match="unknown member 'password'"):
            rt.audit_emit({"type": "authentication", "password": "hunter2"})
        with pytest.raises(InvalidArgumentError, match="stamped by bitsec"):
            rt.audit_emit({"type": "session", "hash": "00"})
        with pytest.raises(ValueError):  # every rejection is also a ValueError
            rt.audit_emit([1, 2])
        assert rt.audit_stats()["rejected"] == 7
        assert "bitsec_audit_events_rejected_total 7" in rt.metrics_text()



def test_submit_hands_over_many_events_in_order(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    with runtime(p, service="erp-api") as rt:
        assert rt.audit_emit({"type": "session", "actor": "first"}) == 2
        events = [{"type": "session", "actor": "u1"}, '{"type": "lunch", "details": {"request_id": "r-9"}}',
                  b'{"type": "data_access", "operation": "read", "actor": "u2"}', '{"type": "session",',
                  {"type": "security_incident", "details": {"\u00e9": "\u00fcn\u00efcode"}}]
        # refusals are recorded by the writer, not raised here
        assert rt.audit_submit(events) == 5
        assert rt.audit_emit({"type": "session", "actor": "last"}) == 8
        assert rt.audit_submit([]) == 0 and rt.audit_submit(iter(())) == 0
        rt.audit_flush()
        st = rt.audit_stats()
        assert st["durable_seq"] == 8 and st["rejected"] == 2 and st["dropped"] == 0
    recs = records(p)
    assert [r["seq"] for r in recs] == list(range(1, 10))
    assert [r.get("actor") for r in recs[1:4]] == ["first", "u1", None]
    assert recs[3]["subtype"] == "event_rejected" and recs[3]["details"]["request_id"] == "r-9"
    assert recs[3]["details"]["source"] == "bitsec_audit_submit" and "not a known type" in recs[3]["reason"]
    assert recs[4]["actor"] == "u2" and recs[4]["subtype"] == "read" and recs[4]["service"] == "erp-api"
    assert recs[5]["details"]["status"] == "BITSEC_E_MALFORMED"
    assert recs[6]["details"] == {"\u00e9": "\u00fcn\u00efcode"} and recs[7]["actor"] == "last"
    assert audit_verify([p]).intact


SURROGATE_VALUES = {  # value sent -> value recorded
    "alice\ud800": "alice\ufffd",                   # a lone high surrogate
    "\udc80bob": "\ufffdbob",                       # a lone low one
    "x\udc00\ud800y": "x\ufffd\ufffdy",             # a pair the wrong way round
    "\ud800\ud800\udc00": "\ufffd\U00010000",       # a lone one, then a pair (JSON reads its character)
    "\U0001f600 ok": "\U0001f600 ok",               # an emoji (a pair in JSON): kept
    "C:\\ud800": "C:\\ud800",                       # a backslash, then text: kept as is
    "\\\ud800\\\\ud800": "\\\ufffd\\\\ud800",       # a backslash, then a lone surrogate
}


def test_a_lone_surrogate_in_a_mapping_event_is_replaced_not_the_event_lost(tmp_path: Path) -> None:
    # A lone surrogate in a mapping's text (a key or a value, at any depth) is recorded as
    # U+FFFD: encoded as the escape \udXXX, bitsec's JSON reader refused the whole event (a
    # failed_login with a crafted user name was never recorded); valid pairs stay as they are.
    p = tmp_path / "a.log"
    sent = list(SURROGATE_VALUES)
    with runtime(p) as rt:
        for v in sent:
            rt.audit_emit({"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": v,
                           "details": {"nested": [{"v": v}], v: 1}})
        rt.audit_submit([{"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": v}
                         for v in sent])
        rt.audit_flush()
        assert rt.audit_stats()["rejected"] == 0
    recs = [r for r in records(p) if r.get("subtype") == "failed_login"]
    want = [SURROGATE_VALUES[v] for v in sent]
    assert [r["actor"] for r in recs] == want + want
    assert [r["details"] for r in recs[:len(sent)]] == [{"nested": [{"v": w}], w: 1} for w in want]
    assert audit_verify([p]).intact


def test_keys_that_differ_only_in_lone_surrogates_stay_distinct(tmp_path: Path) -> None:
    # Two keys of one object that differ only in a lone surrogate (a form's field names,
    # echoed into details) both became "field\ufffd": a duplicate key, for which bitsec
    # refused the whole event (recorded only as event_rejected). Each is kept, the later one
    # with a suffix; a key already spelled with U+FFFD keeps its place too.
    p = tmp_path / "a.log"
    with runtime(p) as rt:
        rt.audit_emit({"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": "a\ud800",
                       "details": {"field\udc80": 1, "field\udc81": 2, "field\ufffd": 3,
                                   "nested": {"k\ud800": "x\ud800", "k\udbff": [{"\udc00": 0, "\udc01": 1}]}}})
        rt.audit_flush()
        assert rt.audit_stats()["rejected"] == 0
    (rec,) = [r for r in records(p) if r.get("subtype") == "failed_login"]
    assert rec["actor"] == "a\ufffd"
    assert rec["details"] == {"field\ufffd": 1, "field\ufffd~2": 2, "field\ufffd~3": 3,
                              "nested": {"k\ufffd": "x\ufffd", "k\ufffd~2": [{"\ufffd": 0, "\ufffd~2": 1}]}}
    assert audit_verify([p]).intact


def test_colliding_keys_from_surrogates_are_all_kept_and_nothing_is_lost(tmp_path: Path) -> None:
    # Keys a client controls that collapse onto one name: many lone surrogates (each gets
    # the next suffix, also past keys already spelled with one), a pair written as two
    # characters next to the character itself (json writes both as the same escape), and an
    # event nested too deep for Python to read back (the library refuses it and records the
    # refusal; the batch's other event is recorded). Never an exception, never a lost batch.
    p = tmp_path / "a.log"
    many = {"k\ufffd\ufffd~2": "taken", **{"k" + chr(0xDC00 + i % 16) + chr(0xDC00 + i // 16): i for i in range(300)}}
    deep: Any = {"\ud800": 1}
    for _ in range(100):  # beyond the library's depth, within what Python reads
        deep = {"d": deep}
    deeper: Any = deep
    for _ in range(5000):  # beyond what Python's encoder can write at all
        deeper = {"d": deeper}
    with runtime(p) as rt:
        rt.audit_emit({"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": "m",
                       "details": many})
        rt.audit_emit({"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": "e",
                       "details": {"\ud83d\ude00": 1, "\U0001f600": 2}})
        rt.audit_submit([{"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": "deep",
                          "details": deep},
                         {"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": "deeper",
                          "details": deeper},
                         {"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": "next"}])
        rt.audit_flush()
        assert rt.audit_stats()["rejected"] == 2  # the deep ones, refused by the library (and recorded)
    recs = {r.get("actor"): r for r in records(p) if r.get("subtype") == "failed_login"}
    details = recs["m"]["details"]
    assert len(details) == 301 and details["k\ufffd\ufffd~2"] == "taken" and details["k\ufffd\ufffd"] == 0
    assert sorted(v for k, v in details.items() if k != "k\ufffd\ufffd~2") == list(range(300))
    assert recs["e"]["details"] == {"\U0001f600": 1, "\U0001f600~2": 2}
    assert "next" in recs and "deep" not in recs and "deeper" not in recs
    rejected = [r for r in records(p) if r.get("subtype") == "event_rejected"]
    assert len(rejected) == 2 and all("nesting" in r["reason"] for r in rejected), rejected
    assert audit_verify([p]).intact


def test_an_emoji_in_a_value_is_not_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keys are written again (parsed, deduplicated) only when one can collide: a lone
    # surrogate, or a pair in a key. A character beyond the BMP in a value (an emoji in a
    # name) is the common case and leaves the text as json wrote it.
    import bitsec.audit as audit_mod

    parsed: list[str] = []
    real = audit_mod.json.loads
    monkeypatch.setattr(audit_mod.json, "loads", lambda t, **k: parsed.append(t) or real(t, **k))
    assert audit_mod._ascii_json(audit_mod._encode({"actor": "\U0001f600", "d": {"k\\": "x\":\U0001f600"}})) \
        == b'{"actor":"\\ud83d\\ude00","d":{"k\\\\":"x\\":\\ud83d\\ude00"}}'
    assert parsed == []
    assert audit_mod._ascii_json(audit_mod._encode({"\U0001f600": 1, "\ud83d\ude00": 2})) \
        == b'{"\\ud83d\\ude00":1,"\\ud83d\\ude00~2":2}'
    assert len(parsed) == 1


def test_a_lone_surrogate_in_a_log_records_extras_is_replaced(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    errors: list[logging.LogRecord] = []
    with runtime(p) as rt:
        h = AuditHandler(rt)
        h.handleError = errors.append  # type: ignore[method-assign]
        for v in SURROGATE_VALUES:
            h.emit(logging.makeLogRecord({"msg": "login " + v, "event_type": "authentication",
                                          "event_subtype": "failed_login", "success": False, "user_id": v,
                                          "form": {v: [v]}}))
        h.emit(logging.makeLogRecord({"msg": "m", "audit": {"type": "mfa", "subtype": "totp_failed",
                                                            "actor": "\ud800"}}))
        rt.audit_flush()
    assert errors == []
    recs = records(p)[1:-1]
    want = list(SURROGATE_VALUES.values())
    assert [r["actor"] for r in recs] == want + ["\ufffd"]
    assert [(r["subtype"], r["details"]["message"], r["details"]["form"]) for r in recs[:-1]] == [
        ("failed_login", "login " + w, {w: [w]}) for w in want]


def test_submit_splits_long_lists_and_refuses_modes_that_wait(tmp_path: Path) -> None:
    from bitsec import UnsupportedError
    from bitsec.audit import SUBMIT_MAX_EVENTS
    p = tmp_path / "a.log"
    n = SUBMIT_MAX_EVENTS * 2 + 3  # three native calls
    with runtime(p, durability="none", queue_capacity=1 << 16) as rt:
        assert rt.audit_submit({"type": "session", "actor": f"u{k}"} for k in range(n)) == n
        rt.audit_flush()
    assert [r.get("actor") for r in records(p)[1:-1]] == [f"u{k}" for k in range(n)]
    for extra in ({"durability": "every_event"}, {"full_policy": "block"}):
        with runtime(tmp_path / "b.log", **extra) as rt:
            with pytest.raises(UnsupportedError, match="bitsec_audit_emit"):
                rt.audit_submit([{"type": "session"}])
    with bitsec.Runtime({}) as rt:
        with pytest.raises(NotConfiguredError):
            rt.audit_submit([{"type": "session"}])
        assert rt.audit_submit([]) == 0  # nothing to hand over: no call at all



def test_submit_splits_by_size_and_loses_no_large_event(tmp_path: Path) -> None:
    # More than one call's 16 MiB in one batch (events of ~1 MiB: attacker-sized request
    # records): every event is recorded, cut down to max_event_bytes; one over the library's
    # event limit is refused for its size, in its place, without failing the others.
    p = tmp_path / "a.log"
    big = [{"type": "session", "actor": f"b{k}", "details": {"k": "z" * ((1 << 20) - 200)}} for k in range(20)]
    huge = '{"type": "session", "details": {"k": "' + "z" * (3 << 20) + '"}}'
    with runtime(p, durability="none") as rt:
        assert rt.audit_submit([*big[:10], huge, *big[10:]]) == 21
        rt.audit_flush()
        assert rt.audit_stats()["rejected"] == 1
    recs = records(p)[1:-1]
    assert [r.get("actor") for r in recs] == [f"b{k}" for k in range(10)] + [None] + [f"b{k}" for k in range(10, 20)]
    assert all(r["truncated"] for r in recs if r.get("actor"))
    assert recs[10]["subtype"] == "event_rejected" and recs[10]["details"]["status"] == "BITSEC_E_TOO_LARGE"


def test_records_waiting_for_the_turn_outlive_their_runtime_reference(tmp_path: Path) -> None:
    # A runtime nothing else holds while its records wait for the end of the loop's turn still
    # hands them over (the scheduled run holds it), then is collected and closed.
    import asyncio
    import gc

    p = tmp_path / "a.log"

    async def main() -> None:
        rt = runtime(p, durability="none")
        rt._audit_soon(lambda: '{"type": "session", "actor": "waiting"}')
        del rt
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    gc.collect()
    assert [r.get("actor") for r in records(p)] == [None, "waiting", None]


def test_a_failed_hand_over_is_logged_never_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    async def closed_meanwhile() -> None:
        rt = runtime(tmp_path / "a.log", durability="none")
        rt._audit_soon(lambda: '{"type": "session"}')
        rt._h, h = None, rt._h  # closed before the turn ends (as by another thread)
        try:
            await asyncio.sleep(0)
        finally:
            rt._h = h
            rt.close()

    with caplog.at_level(logging.WARNING, logger="bitsec"):
        asyncio.run(closed_meanwhile())
    assert "1 request records not handed over" in caplog.text and "closed" in caplog.text

    async def not_configured() -> list[str]:
        with bitsec.Runtime({}) as rt:
            ran: list[str] = []
            rt._audit_soon(lambda: ran.append("first") or '{"type": "session"}')
            await asyncio.sleep(0)
            rt._audit_soon(lambda: ran.append("second") or '{"type": "session"}')  # not even written
            await asyncio.sleep(0)
            return ran

    assert asyncio.run(not_configured()) == ["first"]

def test_submit_floods_the_bounded_queue_drops_counted_and_reported(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    with runtime(p, queue_capacity=64) as rt:
        accepted = rt.audit_submit([{"type": "session", "actor": f"f{k}"} for k in range(4000)])
        assert accepted == 63  # the queue of 64 holds the writer's "started" record too
        rt.audit_flush()
        assert rt.audit_stats()["dropped"] == 4000 - accepted
    recs = records(p)
    assert sum(1 for r in recs if str(r.get("actor", "")).startswith("f")) == accepted
    assert [r["details"]["count"] for r in recs if r["subtype"] == "events_dropped"] == [4000 - accepted]
    assert audit_verify([p]).events_dropped == 4000 - accepted

def test_not_configured() -> None:
    with bitsec.Runtime({}) as rt:
        with pytest.raises(NotConfiguredError):
            rt.audit_emit({"type": "session"})
        # Nothing with metrics is configured: only the runtime's own count of ABI calls.
        lines = [ln for ln in rt.metrics_text().splitlines() if not ln.startswith("#")]
        assert len(lines) == 1 and lines[0].startswith(f'bitsec_abi_calls_total{{pid="{os.getpid()}"}} ')


def test_metrics_follow_adr007_names(tmp_path: Path) -> None:
    with runtime(tmp_path / "a.log") as rt:
        for _ in range(3):
            rt.audit_emit({"type": "authentication", "event_subtype": "failed_login", "result": "failure"})
        rt.audit_emit({"type": "authentication", "event_subtype": "login", "result": "success"})
        rt.audit_emit({"type": "authorization", "resource": "defects", "action": "delete", "result": "denied"})
        rt.audit_emit({"type": "data_access", "operation": "read", "sensitive_data_accessed": True})
        rt.audit_emit({"type": "data_access", "operation": "read", "sensitive_data_accessed": True})
        rt.audit_flush()
        text = rt.metrics_text()
    assert 'authentication_events_total{event_subtype="failed_login",result="failure"} 3' in text
    assert 'authentication_events_total{event_subtype="login",result="success"} 1' in text
    assert 'authorization_events_total{event_subtype="none",result="denied"} 1' in text
    assert 'data_access_events_total{event_subtype="read",result="unknown",sensitive_data_accessed="true"} 2' in text
    # Every sample line parses as Prometheus text: name{labels} value.
    for line in text.splitlines():
        if not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            assert name and float(value) >= 0


def test_logging_handler_forwards_adr_style_records(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    rt = runtime(p)
    log = logging.getLogger("test-audit-handler")
    log.propagate = False
    log.setLevel(logging.INFO)
    h = AuditHandler(rt)
    log.addHandler(h)
    try:
        # ADR-007's SecurityAuditLogger fields, as logging extras.
        log.info("Authentication event", extra={"event_type": "authentication", "event_subtype": "failed_login",
                                                "user_id": "u7", "ip_address": "10.1.2.3", "user_agent": "ua",
                                                "success": False, "failure_reason": "expired",
                                                "timestamp": "2024-01-01T00:00:00"})
        log.info("Data access event", extra={"event_type": "data_access", "user_id": "u7", "operation": "update",
                                             "table_name": "defects", "record_id": 42, "sensitive_data_accessed": True,
                                             "data_classification": "internal"})
        log.warning("disk %s", "full", extra={"node": "n1"})
        log.info("explicit", extra={"audit": {"type": "mfa", "subtype": "totp_failed", "result": "failure"}})
        h.flush()
    finally:
        log.removeHandler(h)
        rt.close()
    recs = records(p)[1:-1]
    assert len(recs) == 4
    a, d, app, mfa = recs
    assert (a["type"], a["subtype"], a["result"], a["actor"], a["ip"], a["reason"]) == (
        "authentication", "failed_login", "failure", "u7", "10.1.2.3", "expired")
    assert a["details"]["message"] == "Authentication event" and "timestamp" not in a["details"]
    assert (d["type"], d["action"], d["resource"], d["resource_id"], d["sensitive_data_accessed"]) == (
        "data_access", "update", "defects", "42", True)
    assert app["type"] == "application" and app["subtype"] == "log"
    assert app["details"] == {"node": "n1", "message": "disk full", "logger": "test-audit-handler", "level": "WARNING"}
    assert (mfa["type"], mfa["subtype"]) == ("mfa", "totp_failed")


def test_handler_reports_rejections_through_handle_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[logging.LogRecord] = []
    with runtime(tmp_path / "a.log") as rt:
        h = AuditHandler(rt)
        monkeypatch.setattr(h, "handleError", errors.append)
        h.emit(logging.LogRecord("x", logging.INFO, "f", 1, "m", None, None))  # ok
        rec = logging.LogRecord("x", logging.INFO, "f", 1, "m", None, None)
        rec.event_type = "not-a-type"
        h.emit(rec)
    assert len(errors) == 1


def test_verify_intact_and_cli(tmp_path: Path) -> None:
    p, _ = trail(tmp_path, 5)
    r = audit_verify([p])
    assert r.intact and r.records == 7 and (r.first_seq, r.last_seq) == (1, 7) and r.problem is None
    out = subprocess.run([sys.executable, "-m", "bitsec", "audit", "verify", str(p)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("intact: 7 records, seq 1-7")
    js = subprocess.run([sys.executable, "-m", "bitsec", "audit", "verify", "--json", str(p)], capture_output=True, text=True)
    assert json.loads(js.stdout)["intact"] is True
    missing = subprocess.run([sys.executable, "-m", "bitsec", "audit", "verify", str(tmp_path / "nope.log")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot open" in missing.stderr
    with pytest.raises(BitsecIOError):
        audit_verify([tmp_path / "nope.log"])


@pytest.mark.parametrize("kind", ["edited", "deleted", "inserted", "reordered"])
def test_tampering_is_detected_at_the_right_record(tmp_path: Path, kind: str) -> None:
    p, lines = trail(tmp_path, 10)
    if kind == "edited":
        lines[6] = lines[6].replace('"actor":"u5"', '"actor":"admin"')
        want_line, want_seq = 7, 7
    elif kind == "deleted":
        del lines[6]
        want_line, want_seq = 7, 7
    elif kind == "inserted":
        lines.insert(6, lines[2])
        want_line, want_seq = 7, 3
    else:
        lines[6], lines[7] = lines[7], lines[6]
        want_line, want_seq = 7, 8
    p.write_text("\n".join(lines) + "\n")
    r = audit_verify([p])
    assert not r.intact
    assert r.problem is not None
    assert (r.problem.kind, r.problem.line, r.problem.seq) == (kind, want_line, want_seq), r.problem
    assert r.records == 6
    out = subprocess.run([sys.executable, "-m", "bitsec", "audit", "verify", str(p)], capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout.startswith(f"TAMPERED: {kind} at {p}:{want_line}")


def test_hmac_keyed_chain(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    key = b"k" * 32
    with bitsec.Runtime({"allow_inline_secrets": True,
                         "audit": {"sinks": [{"type": "file", "path": str(p)}], "hmac_key": {"value": key.decode()}}}) as rt:
        rt.audit_emit({"type": "session"})
    assert audit_verify([p], key=key).intact
    assert audit_verify([p], key=key).chain == "hmac-sha256"
    unkeyed = audit_verify([p])
    assert not unkeyed.intact and unkeyed.problem is not None and unkeyed.problem.line == 1
    kf = tmp_path / "key"
    kf.write_bytes(key)
    out = subprocess.run([sys.executable, "-m", "bitsec", "audit", "verify", "--key-file", str(kf), str(p)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rotation_files_verify_in_any_order(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with runtime(p, durability="none") as rt:
        for k in range(2000):
            rt.audit_emit({"type": "session", "actor": f"a{k}"})
    # Rotation by size is configured on the sink: reopen with it and continue the chain.
    with bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(p), "rotate_bytes": 50000}]}}) as rt:
        for k in range(2000, 4000):
            rt.audit_emit({"type": "session", "actor": f"a{k}"})
    files = sorted(tmp_path.glob("audit.log*"))
    assert len(files) > 5
    r = audit_verify(reversed(files))
    assert r.intact, r.problem
    actors = [rec.get("actor") for f in files for rec in records(f) if rec["type"] == "session"]
    assert sorted(actors) == sorted(f"a{k}" for k in range(4000))
    assert all(os.stat(f).st_mode & 0o777 == 0o600 for f in files)


CHILD = textwrap.dedent("""
    import sys, bitsec
    rt = bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": sys.argv[1]}], "durability": "every_event"}})
    k = 0
    while True:
        seq = rt.audit_emit({"type": "session", "subtype": "tick", "actor": "child", "details": {"k": k}})
        sys.stdout.write(f"{seq}\\n")
        sys.stdout.flush()
        k += 1
""")


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_in_every_event_mode_loses_nothing_acknowledged(tmp_path: Path, round_: int) -> None:
    p = tmp_path / "audit.log"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(p)], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert child.stdout is not None
    acked: list[int] = []
    target = random.randint(20, 300)
    try:
        while len(acked) < target:
            line = child.stdout.readline()
            assert line, "the child stopped early"
            acked.append(int(line))
        time.sleep(random.random() * 0.05)
        os.kill(child.pid, signal.SIGKILL)
        acked += [int(x) for x in child.stdout.read().split()]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    r = audit_verify([p])
    assert r.intact, r.problem
    on_disk = {rec["seq"] for rec in records(p) if "seq" in rec} if r.torn_tail is None else \
        {json.loads(x)["seq"] for x in p.read_bytes().split(b"\n")[:-1]}
    assert set(acked) <= on_disk
    assert r.last_seq >= max(acked)
    # A restart recovers the chain (truncating a torn record if the kill left one).
    with runtime(p) as rt:
        seq = rt.audit_emit({"type": "session"})
    assert seq == r.last_seq + 2
    again = audit_verify([p])
    assert again.intact and again.torn_tail is None


@pytest.mark.parametrize("mode", REDIS_MODES)
def test_redis_stream_sink(tmp_path: Path, request: pytest.FixtureRequest, mode: str) -> None:
    # The stream sink in every Redis deployment mode: the stream holds exactly the file's
    # records, in order (in a cluster, on the node that owns the stream's key).
    stream = f"audit-py-{os.getpid()}-{time.monotonic_ns()}"
    section = redis_section(request, mode)
    cfg = {"redis": section,
           "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "a.log")},
                               {"type": "redis", "stream": stream, "maxlen": 100}]}}
    with bitsec.Runtime(cfg) as rt:
        for k in range(3):
            rt.audit_emit({"type": "authorization", "result": "denied", "actor": f"u{k}"})
        rt.audit_flush()
        assert rt.audit_stats()["sink_errors"].get("redis", 0) == 0
    r = redis_client(section)
    key = section["key_prefix"] + stream
    entries = r.xrange(key)
    lines = (tmp_path / "a.log").read_text().splitlines()
    assert len(lines) >= 4  # started, the three events (closed: stopped)
    assert [e[1][b"record"].decode() for e in entries] == lines
    assert [int(e[1][b"seq"]) for e in entries] == list(range(1, len(lines) + 1))
    r.delete(key)


def test_redis_outage_is_counted_and_recovery_reported(tmp_path: Path, fresh_redis) -> None:
    p = tmp_path / "a.log"
    cfg = {"redis": {"host": "127.0.0.1", "port": fresh_redis.port, "command_timeout_ms": 300,
                     "reconnect_backoff_ms": 10, "reconnect_backoff_max_ms": 20},
           "audit": {"sinks": [{"type": "file", "path": str(p)}, {"type": "redis", "stream": "s"}]}}
    with bitsec.Runtime(cfg) as rt:
        rt.audit_emit({"type": "session"})
        rt.audit_flush()
        fresh_redis.stop()
        for _ in range(3):
            rt.audit_emit({"type": "session", "subtype": "during_outage"})
            rt.audit_flush()
        st = rt.audit_stats()
        assert st["sink_errors"]["redis"] >= 1 and st["sink_records_lost"]["redis"] == 3
        fresh_redis.restart()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rt.audit_emit({"type": "session", "subtype": "after"})
            rt.audit_flush()
            if any(r["subtype"] == "sink_recovered" for r in records(p)):
                break
            time.sleep(0.05)
        assert 'bitsec_audit_sink_records_lost_total{sink="redis"} 3' in rt.metrics_text()
    rec = [r for r in records(p) if r["subtype"] == "sink_recovered"]
    assert rec and rec[0]["details"]["sink"] == "redis" and rec[0]["details"]["records_lost"] == 3
    assert audit_verify([p]).intact


FAILING_CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys, time, bitsec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
    p = sys.argv[1]
    rt = bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": p}], "durability": "every_event"}})
    rt.audit_emit({"type": "session", "subtype": "before"})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(p) + 100, hard))
    err = None
    try:
        rt.audit_emit({"type": "session", "subtype": "during", "details": {"pad": "x" * 300}})
    except bitsec.BitsecIOError as e:
        err = str(e)
    failing = rt.audit_stats()["file_failure"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    deadline = time.monotonic() + 10
    while rt.audit_stats()["file_failure"] is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    seq = rt.audit_emit({"type": "session", "subtype": "after"})
    text = rt.metrics_text()
    rt.close()
    print(json.dumps({"err": err, "failing": failing, "seq": seq, "metrics": text}))
""")


def test_file_sink_failure_keeps_records_and_reports_recovery(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    out = subprocess.run([sys.executable, "-c", FAILING_CHILD, str(p)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["err"] and "not durable" in res["err"]
    assert res["failing"] and "write failed" in res["failing"]
    assert 'bitsec_audit_sink_errors_total{sink="file"} 0' not in res["metrics"]
    r = audit_verify([p])
    assert r.intact, r.problem
    subs = [rec["subtype"] for rec in records(p)]
    # The record that failed was kept and written once the file accepted writes again.
    assert subs[:3] == ["started", "before", "during"]
    assert subs.count("during") == 1
    assert "sink_recovered" in subs and subs.index("sink_recovered") < subs.index("after")
    assert subs[-1] == "stopped"


def test_rotation_by_time_continues_the_chain(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(p), "rotate_seconds": 1}]}}) as rt:
        rt.audit_emit({"type": "session", "subtype": "first"})
        rt.audit_flush()
        time.sleep(1.2)  # the period is over: the next record starts a new file
        rt.audit_emit({"type": "session", "subtype": "second"})
    files = sorted(tmp_path.glob("audit.log*"))
    assert len(files) == 2
    rotated = [f for f in files if f != p][0]
    assert rotated.name == "audit.log." + "0" * 15 + "2"
    assert [r["subtype"] for r in records(rotated)] == ["started", "first"]
    assert [r["subtype"] for r in records(p)] == ["second", "stopped"]
    assert records(p)[0]["prev"] == records(rotated)[-1]["hash"]
    assert audit_verify([p, rotated]).intact
