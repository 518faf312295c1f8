"""bitsec._speedups, the guard's optional compiled steps, against the Python they stand in for.

Each compiled step (the header pass, the native guard call for a token whose claims are known,
the ASGI send wrapper, the common request record) is compared with the Python the package runs
without the module (``BITSEC_SPEEDUPS=0``, or a source install without a C compiler): the same
answers, headers and records for ordinary and odd inputs, the same exceptions, no reference
leaked. ``make test`` also runs the guard's suites once with ``BITSEC_SPEEDUPS=0``."""
from __future__ import annotations

import gc
import importlib
import itertools
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_fastapi_guard import audit_records, config, make_app, token

import bitsec
from bitsec import _abi, _accel, guardcheck
from bitsec.fastapi import GuardMiddleware, bitsec_lifespan, guard

guard_mod = importlib.import_module("bitsec.fastapi.guard")  # (the module: the package names a function guard)
PURE = os.environ.get("BITSEC_SPEEDUPS", "1").strip() == "0"


@pytest.fixture(autouse=True)
def _compiled(request: pytest.FixtureRequest) -> None:
    """Every test here but the first compares the compiled steps with Python's: they must be
    loaded (make test's Python-only run, BITSEC_SPEEDUPS=0, runs the first test alone)."""
    if request.node.name != "test_the_compiled_steps_are_loaded_unless_turned_off":
        assert _accel.SPEEDUPS is not None, "bitsec._speedups did not load (make speedups; BITSEC_SPEEDUPS=0?)"


def test_the_compiled_steps_are_loaded_unless_turned_off() -> None:
    # make test builds the module (`make speedups`) and runs the suites with it, then the
    # guard's suites again without it: a build that lost the module fails here, not silently.
    if PURE:
        assert not _accel.active() and guard_mod._Sender is None and guardcheck._compiled_request is None
        assert guard_mod._guard_known is None and guard_mod._allowed is None and guard_mod._scan is None
        return
    assert _accel.active(), "bitsec._speedups did not load (make speedups)"
    sp = _accel.SPEEDUPS
    assert sp is not None and Path(sp.__file__).parent == Path(bitsec.__file__).parent
    assert Path(sp.__file__).name.endswith(".abi3.so")
    assert guard_mod._Sender is sp.sender and guard_mod._compiled_record is sp.record
    assert guardcheck._compiled_request is sp.guard_request
    assert guard_mod._guard_known is sp.guard_known and guard_mod._allowed is sp.allowed and guard_mod._scan is sp.scan


@pytest.fixture()
def python_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Turns the compiled steps off in this process (what BITSEC_SPEEDUPS=0 does at import)."""
    def off() -> None:
        monkeypatch.setattr(guard_mod, "_Sender", None)
        monkeypatch.setattr(guard_mod, "_scan", None)
        monkeypatch.setattr(guard_mod, "_compiled_record", None)
        monkeypatch.setattr(guard_mod, "_guard_known", None)
        monkeypatch.setattr(guard_mod, "_allowed", None)
        monkeypatch.setattr(guardcheck, "_compiled_request", None)
    return off


# ---- the send wrapper, through the guard ---------------------------------------------------

def _inner(kind: str) -> Any:
    """An application behind the guard that answers in one of the ways ASGI allows (and a
    few it does not)."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        start: Any = {"type": "http.response.start", "status": 200}
        if kind == "no_headers_key":
            pass
        elif kind == "empty":
            start["headers"] = []
        elif kind == "plain":
            start["headers"] = [(b"content-type", b"application/json"), (b"content-length", b"2")]
        elif kind == "own_request_id":  # the application's own id wins, the rest is added
            start["headers"] = [(b"X-Request-ID", b"mine"), (b"content-length", b"2")]
        elif kind == "own_rate_limit":
            start["headers"] = [(b"x-ratelimit-limit", b"9")]
        elif kind == "str_names":
            start["headers"] = [("X-RateLimit-Remaining", "1"), ("content-type", "text/plain")]
        elif kind == "tuple_headers":
            start["headers"] = ((b"content-type", b"text/plain"), [b"x-other", b"1"])
        elif kind == "mapping":
            start = MappingProxyType({**start, "headers": [(b"content-type", b"text/plain")]})
        elif kind == "status_201":
            start["status"] = 201
            start["headers"] = []
        elif kind == "status_500":
            start["status"] = 500
            start["headers"] = []
        elif kind == "no_status":
            del start["status"]
            start["headers"] = []
        elif kind == "raise_before":
            raise RuntimeError("before the start")
        elif kind == "bad_pair":
            start["headers"] = [(b"content-type",)]
        elif kind == "bad_pair_clash":  # the careful merge unpacks every pair: Python's ValueError
            start["headers"] = [(b"x-request-id", b"a"), (b"content-type",)]
        await send(start)
        if kind == "two_starts":
            await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})
        if kind == "raise_after":
            raise RuntimeError("after the start")
    return app


KINDS = ("no_headers_key", "empty", "plain", "own_request_id", "own_rate_limit", "str_names", "tuple_headers",
         "mapping", "status_201", "status_500", "no_status", "raise_before", "raise_after", "two_starts", "bad_pair",
         "bad_pair_clash")


def _drive(tmp_path: Path, kind: str) -> tuple[list[Any], str | None, list[dict]]:
    """One request through a guard in front of ``_inner(kind)``: the messages the server
    got, the exception the guard raised (its type), the request's records (without times)."""
    with bitsec.Runtime(config(tmp_path)) as rt:
        app = make_app(rt)
        mw = GuardMiddleware(_inner(kind))
        sent: list[Any] = []
        raised: str | None = None
        with TestClient(app):  # the lifespan: the runtime on app.state
            tok = token(rt, "alice", ["viewer"]).encode()

            async def run() -> None:
                async def receive() -> Any:
                    return {"type": "http.request", "body": b"", "more_body": False}

                async def send(message: Any) -> None:
                    sent.append(dict(message))

                scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                         "path": "/me", "raw_path": b"/me", "query_string": b"", "root_path": "",
                         "scheme": "http", "server": ("127.0.0.1", 80), "client": ("10.1.2.3", 5555), "app": app,
                         "headers": [(b"host", b"t"), (b"authorization", b"Bearer " + tok), (b"user-agent", b"ua/1"),
                                     (b"x-request-id", b"req-1")], "state": {}}
                await mw(scope, receive, send)

            try:
                anyio.run(run)
            except Exception as e:  # noqa: BLE001 (compared between the two ways)
                raised = f"{type(e).__name__}: {e}"
            records = [{k: v for k, v in r.items() if k not in ("time", "ts", "id", "seq", "prev", "hash", "hmac")}
                       for r in audit_records(tmp_path, rt)]
    for m in sent:  # the remaining budget differs by nothing here: one take each way
        if "headers" in m:
            m["headers"] = [tuple(h) for h in m["headers"]]
    return sent, raised, records


@pytest.mark.parametrize("kind", KINDS)
def test_the_compiled_wrapper_sends_and_records_as_python_does(tmp_path: Path, kind: str,
                                                               python_only: Callable[[], None]) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "py").mkdir()
    compiled = _drive(tmp_path / "c", kind)
    python_only()
    python = _drive(tmp_path / "py", kind)
    assert compiled == python
    sent, raised, records = compiled
    if kind == "no_status":
        assert raised is not None and raised.startswith("KeyError")  # what Python raises, raised the same way
    elif kind == "bad_pair_clash":
        assert raised == "ValueError: not enough values to unpack (expected 2, got 1)", raised
    elif kind not in ("raise_before", "bad_pair"):
        assert raised in (None, "RuntimeError: after the start"), raised
        start = sent[0]
        names = [n.lower() if isinstance(n, (bytes, str)) else n for n, _ in start["headers"]]
        if kind == "own_request_id":
            assert (b"X-Request-ID", b"mine") in start["headers"] and b"x-request-id" not in start["headers"]
            assert names.count(b"x-request-id") == 1 and b"x-ratelimit-remaining" in names
        elif kind == "own_rate_limit":
            assert names.count(b"x-ratelimit-limit") == 1 and (b"x-ratelimit-limit", b"9") in start["headers"]
        elif kind != "str_names":
            assert (b"x-request-id", b"req-1") in start["headers"] and b"x-ratelimit-limit" in names
        if kind == "two_starts":
            assert sent[1] == {"type": "http.response.start", "status": 202, "headers": []}
        assert len(records) == 1 and records[0]["details"]["request_id"] == "req-1"
    if kind == "raise_before":
        assert [r["details"]["status"] for r in records] == [500] and sent == []


def test_a_disabled_audit_is_seen_at_the_response_start(tmp_path: Path) -> None:
    # The wrapper reads the guard's set of runtimes without audit when the response starts,
    # as the Python wrapper does (a runtime disabled while the request ran writes nothing).
    with bitsec.Runtime(config(tmp_path)) as rt:
        calls: list[Any] = []
        sender = _accel.SPEEDUPS.sender(calls.append, [(b"x-request-id", b"r")], True,  # type: ignore[union-attr]
                                        lambda *a: calls.append(a), ("fn", 0), 1, {id(rt)}, id(rt))
        sender({"type": "http.response.start", "status": 200, "headers": []})
        assert calls == [{"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"r")]}]
        assert sender.started


def test_the_wrapper_refuses_wrong_arguments() -> None:
    sp = _accel.SPEEDUPS
    assert sp is not None
    ok = (print, [], True, None, (), 0, set(), 1)
    sp.sender(*ok)
    for i, bad in ((1, ()), (4, []), (6, {}), (5, "x")):
        args = list(ok)
        args[i] = bad
        with pytest.raises(TypeError):
            sp.sender(*args)
    with pytest.raises(ValueError):  # the status's index outside the arguments
        sp.sender(print, [], True, print, ("a",), 1, set(), 1)
    with pytest.raises(TypeError):
        sp.sender(print)
    with pytest.raises(TypeError):
        sp.Sender()
    w = sp.sender(*ok)
    with pytest.raises(TypeError):
        w()
    with pytest.raises(TypeError):
        w({}, {})
    with pytest.raises(KeyError):  # a message without a type: Python's KeyError
        w({})
    assert not w.started


# ---- the header pass -------------------------------------------------------------------------

_python_scan = guard_mod._scan_headers  # (the loop the guard runs without the module)


def test_the_compiled_header_pass_is_the_python_loop() -> None:
    # guard.py's loop reads what the compiled pass returns; the pass returns None for what it
    # does not read (not a list or tuple of pairs), and the loop then raises as before.
    assert guard_mod._scan is not None
    rng = random.Random(7)
    names = [b"authorization", b"user-agent", b"x-request-id", b"Authorization", b"host", "authorization",
             b"authorization ", b"", b"x-request-i"]
    for _ in range(5000):
        headers: Any = [(rng.choice(names), bytes([rng.randrange(256)]) * rng.randrange(3))
                        for _ in range(rng.randrange(8))]
        if rng.random() < 0.3:
            headers = [list(h) for h in headers]
        if rng.random() < 0.3:
            headers = tuple(headers)
        assert guard_mod._scan(headers) == _python_scan(headers), headers
    for odd in ([(b"authorization",)], [(b"a", b"b", b"c")], [b"ab"], [None], ({(b"a", b"b")}), iter([]), "ab", None,
                {b"authorization": b"x"}):
        if guard_mod._scan(odd) is not None:
            raise AssertionError(f"the compiled pass read {odd!r}")


# ---- the native call -------------------------------------------------------------------------

def test_the_compiled_guard_call_decides_as_the_ctypes_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # For a token whose claims are known (the common request), the call goes through the
    # compiled module: the same fields as the ctypes call, one take from the bucket each.
    compiled = guardcheck._compiled_request
    assert compiled is not None
    used: list[int] = []

    def counting(*a: Any) -> Any:
        used.append(1)
        return compiled(*a)

    monkeypatch.setattr(guardcheck, "_compiled_request", counting)
    with bitsec.Runtime(config(tmp_path, capacity=50)) as rt:
        args = guardcheck.GuardArgs(permission="equipment:read", category="default")
        denied = guardcheck.GuardArgs(permission="equipment:delete", category="default")
        tokens = [token(rt, f"u{i}", ["viewer"]).encode() for i in range(3)]
        expired = token(rt, "old", ["viewer"], exp_in=-100).encode()
        for t in tokens + [expired]:
            rt._guard_call(t, args, b"ip:10.0.0.1")  # the claims become known
        used.clear()
        rows = []
        for t, a in itertools.product(tokens + [expired], (args, denied)):
            fields_c, claims_c = rt._guard_call(t, a, b"ip:10.0.0.1")
            monkeypatch.setattr(guardcheck, "_compiled_request", None)
            fields_py, claims_py = rt._guard_call(t, a, b"ip:10.0.0.1")
            monkeypatch.setattr(guardcheck, "_compiled_request", counting)
            rows.append((fields_c, fields_py))
            assert claims_c is claims_py
            assert fields_c[:7] == fields_py[:7] and fields_c[9:] == fields_py[9:]  # (7, 8: the bucket's level)
            if fields_c[5] != _abi.BITSEC_GUARD_NOT_CHECKED and fields_c[0] != 1:
                assert fields_py[7] == fields_c[7] - 1  # one take each, from the same bucket
        assert len(used) == sum(1 for t in tokens for _ in (args, denied))  # the expired token's claims: none kept
        assert {r[0][0] for r in rows} >= {0, 3}  # allowed and denied both went through
        # an error is the ctypes call's exception: a key over the library's limit
        with pytest.raises(bitsec.BitsecError) as compiled_error:
            rt._guard_call(tokens[0], args, b"k" * 100_000)
        monkeypatch.setattr(guardcheck, "_compiled_request", None)
        with pytest.raises(bitsec.BitsecError) as python_error:
            rt._guard_call(tokens[0], args, b"k" * 100_000)
        assert type(compiled_error.value) is type(python_error.value)
    with pytest.raises(bitsec.ClosedError):
        monkeypatch.setattr(guardcheck, "_compiled_request", counting)
        rt._guard_call(tokens[0], args, b"ip:10.0.0.1")


def test_the_native_call_refuses_wrong_arguments_and_an_unbound_module(tmp_path: Path) -> None:
    sp = _accel.SPEEDUPS
    assert sp is not None
    for args in ((0, 1, b"", b""), (1, 0, b"", b""), (1, 1, "t", b""), (1, 1, b"", bytearray()), (1, 1, b""),
                 ("1", 1, b"", b"")):
        with pytest.raises((TypeError, ValueError)):
            sp.guard_request(*args)
    with pytest.raises(ValueError):
        sp.bind_guard(0)
    # a process that loaded the module alone, without bitsec binding it: an error, not a crash
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('bitsec._speedups', sys.argv[1]);"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "try:\n m.guard_request(1, 1, b'', b'')\nexcept RuntimeError as e:\n print('refused:', e)")
    out = subprocess.run([sys.executable, "-c", code, sp.__file__], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "refused: guard_request: bind_guard was not called" in out.stdout, out


# ---- the record ------------------------------------------------------------------------------

def test_the_compiled_record_is_the_python_record(tmp_path: Path) -> None:
    # For every kind of record, method, status, parameter, principal, address, user agent and
    # path, the compiled record is byte for byte the Python one; the odd ones (a refusal, a
    # value that is not ASCII or is cut, a session's record, a part not yet kept) are the
    # Python one's because they are written by it. Every ASCII character is in a value once.
    record = guard_mod._compiled_record
    assert record is not None
    with bitsec.Runtime(config(tmp_path)) as plain:
        app = make_app(plain)

        @app.api_route("/items/{a}/{b}", methods=["GET", "POST"])
        def two(a: str, b: str) -> dict:
            return {}

        @app.get("/one/{q}")
        @guard(audit=True)
        def one(q: str) -> dict:
            return {}

        @app.post("/quiet/{q}")
        @guard(audit=False)
        def quiet(q: str) -> dict:
            return {}

        ascii_all = "".join(map(chr, range(128)))
        claims = plain.verify_token(token(plain, 'o"dd', tenant_id="t\\1", session_id="s1"))
        other = plain.verify_token(token(plain, "\u00e9\u00e8", tenant_id="t2"))
        session = bitsec.Session("sid-1", "user", "t9", 0, 0, 0, 0)
        for sensitive in (None, lambda p: "secret" in p):
            mw = GuardMiddleware(app, sensitive=sensitive, trusted_proxies=["10.0.0.0/8"])
            table = mw.compile(app, plain)
            compiled = wrote = 0
            for entry in table.entries:
                names = re.findall(r"{(\w+)", entry.template or "")
                for method, status, state, ua, client, path, value in itertools.product(
                        ("GET", "POST", "PURGE"), (200, 302, 404, 401, 500, 503, True), 
                        ({}, {"bitsec_claims": claims}, {"bitsec_claims": other}, {"bitsec_session": session}),
                        (None, b"ua/1", b'q"\\\x01', b"\xe9", b"x" * 1030),
                        (("10.1.2.3", 1), ("2001:DB8::1", 2), None),
                        ("/p", "/p\x00\x1f\x7f\"\\", "/\u00e9", "/" + "p" * 2100),
                        ("v", ascii_all, "\u00e9", "x" * 1030, 7)):
                    params = {k: value for k in names[:1]} | {k: "2" for k in names[1:]}
                    for _ in range(2):  # the second time from the kept parts
                        scope = {"type": "http", "method": method, "path": path, "headers": [], "client": client,
                                 "state": dict(state)}
                        want = mw._record_text(entry, scope, scope["state"], status, "rid\"-1", ua, params)
                        # (the request's state as the guard leaves it: the client's address resolved)
                        scope = {"type": "http", "method": method, "path": path, "headers": [], "client": client,
                                 "state": dict(scope["state"])}
                        fell_back: list[Any] = []

                        def fallback(*a: Any) -> Any:
                            fell_back.append(a)
                            return mw._record_text(*a)

                        got = record(fallback, mw, entry, scope, scope["state"], status, "rid\"-1", ua, params)
                        assert got == want, (entry.template, method, status, state, ua, client, path, value)
                        compiled += not fell_back
                        wrote += want is not None
            assert compiled > 500 or sensitive is not None, compiled
            assert wrote > 1000
        # the common record of the benchmark's request: compiled, and valid JSON
        mw = GuardMiddleware(app)
        table = mw.compile(app, plain)
        entry = next(e for e in table.entries if e.template == "/one/{q}")
        scope = {"type": "http", "method": "GET", "path": "/one/7", "headers": [], "client": ("10.0.0.1", 1),
                 "state": {"bitsec_claims": claims}}
        first = mw._record_text(entry, scope, scope["state"], 200, "r1", b"ua/1", {"q": "7"})
        got = record(lambda *a: pytest.fail("not compiled"), mw, entry, scope, scope["state"], 200, "r1", b"ua/1",
                     {"q": "7"})
        assert got == first and json.loads(got)["resource_id"] == "7"



def _audited_route(rt: bitsec.Runtime) -> tuple[GuardMiddleware, Any]:
    """The guard's app with one more route, ``GET /one/{q}``, recorded on every request: its
    middleware (routes compiled) and that route's entry."""
    app = make_app(rt)

    @app.get("/one/{q}")
    @guard(audit=True)
    def one(q: str) -> dict:
        return {}

    mw = GuardMiddleware(app)
    return mw, next(e for e in mw.compile(app, rt).entries if e.template == "/one/{q}")


# ---- references --------------------------------------------------------------------------------

def test_the_compiled_steps_leak_no_reference(tmp_path: Path) -> None:
    # Each compiled step, run many times with the same objects (including its error paths),
    # leaves every object's reference count where it was.
    sp = _accel.SPEEDUPS
    assert sp is not None
    with bitsec.Runtime(config(tmp_path)) as rt:
        mw, entry = _audited_route(rt)
        claims = rt.verify_token(token(rt, "alice"))
        state = {"bitsec_claims": claims}
        scope = {"type": "http", "method": "GET", "path": "/one/x", "headers": [], "client": ("10.0.0.1", 1),
                 "state": state}
        params = {"q": "x"}
        ua = b"ua/1"
        mw._record_text(entry, scope, state, 200, "r", ua, params)  # the kept parts
        headers = [(b"authorization", b"Bearer x"), (b"user-agent", ua)]
        extra = [(b"x-request-id", b"r")]
        sink: list[Any] = []
        message = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x")]}
        clash = {"type": "http.response.start", "status": 200, "headers": [(b"X-Request-ID", b"x")]}
        args = guardcheck.GuardArgs(permission="equipment:read", category="default")
        tok = token(rt, "bob", ["viewer"]).encode()
        rt._guard_call(tok, args, b"k")
        hp = rt._tokens_hp().value
        memo = rt._token_memo()
        watched = [entry, scope, state, params, ua, headers, extra, sink, message, clash, claims, tok, args, mw, memo,
                   memo.get(tok), entry.requirement]

        def once() -> None:
            assert sp.record(mw._record_text, mw, entry, scope, state, 200, "r", ua, params) is not None
            sp.record(mw._record_text, mw, entry, scope, state, 403, "r", ua, params)
            sp.scan(headers)
            sp.scan([(b"x",)])
            for m in (message, clash):
                w = sp.sender(sink.append, extra, True, lambda *a: None, (None, 0), 1, set(), 1)
                w(m)
                w({"type": "http.response.body", "body": b""})
            try:
                sp.sender(sink.append, extra, True, None, (), 0, set(), 1)({})
            except KeyError:
                pass
            assert type(sp.guard_request(hp, args.route_at, tok, b"k")) is tuple
            fields, _ = sp.guard_known(memo, hp, args.route_at, tok, b"k")
            sp.guard_known(memo, hp, args.route_at, b"unknown", b"k")
            sp.guard_known(memo, hp, args.route_at, tok, b"k" * 5000)
            sp.allowed(guard_mod.GuardResult, entry.requirement, entry.template, claims, fields)
            sp.allowed(guard_mod.GuardResult, entry.requirement, entry.template, claims,
                       fields[:5] + (_abi.BITSEC_GUARD_NOT_CHECKED,) + fields[6:])
            try:
                sp.guard_request(hp, args.route_at, "t", b"k")
            except TypeError:
                pass

        for _ in range(200):
            once()
        sink.clear()
        gc.collect()
        before = [sys.getrefcount(o) for o in watched]
        for _ in range(5000):
            once()
        sink.clear()
        gc.collect()
        assert [sys.getrefcount(o) for o in watched] == before


# ---- an application's requests, both ways ------------------------------------------------------

def test_an_application_answers_and_records_the_same_both_ways(tmp_path: Path,
                                                               python_only: Callable[[], None]) -> None:
    # The reference requests of the guard's suite (allowed, refused by permission, by token,
    # by rate limit, public, a path parameter) through TestClient: the same statuses, headers
    # and records with the compiled steps and without.
    def run(where: Path) -> list[Any]:
        where.mkdir()
        out: list[Any] = []
        with bitsec.Runtime(config(where, capacity=3)) as rt:
            app: FastAPI = make_app(rt)
            with TestClient(app) as c:
                viewer = token(rt, "alice", ["viewer"])
                admin = token(rt, "root", ["admin"])
                for path, method, tok in [("/equipment", "GET", viewer)] * 4 + [
                        ("/equipment/e1", "DELETE", viewer), ("/equipment/e1", "DELETE", admin),
                        ("/me", "GET", viewer), ("/me", "GET", "x.y.z"), ("/health", "GET", None),
                        ("/records/alice", "GET", viewer), ("/optional", "GET", None)]:
                    headers = {"X-Request-ID": f"rid-{len(out)}", "User-Agent": "t/1"}
                    if tok:
                        headers["Authorization"] = f"Bearer {tok}"
                    r = c.request(method, path, headers=headers)
                    kept = {k: v for k, v in r.headers.items() if k not in ("date", "x-ratelimit-reset")}
                    out.append((r.status_code, kept, r.text))
            out.append([{k: v for k, v in e.items() if k not in ("time", "ts", "id", "seq", "prev", "hash", "hmac")}
                        for e in audit_records(where, rt)])
        return out

    compiled = run(tmp_path / "c")
    python_only()
    assert run(tmp_path / "py") == compiled
    assert {200, 401, 403, 429} <= {s for s, *_ in compiled[:-1]}  # allowed, and refused each way
    assert len(compiled[-1]) >= 4 and any(e["details"]["status"] == 200 for e in compiled[-1])


def test_the_compiled_known_token_call_and_outcome_are_pythons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # guard_known is _guard_call for a token whose claims the runtime keeps (None for any other
    # token: the caller makes the full call), allowed is _outcome of an allowed decision.
    sp = _accel.SPEEDUPS
    assert sp is not None
    with bitsec.Runtime(config(tmp_path, capacity=50)) as rt:
        app = make_app(rt)
        mw = GuardMiddleware(app)
        table = mw.compile(app, rt)
        entry = next(e for e in table.entries if e.template == "/equipment")
        args = guardcheck.GuardArgs(permission="equipment:read", category="default")
        tok = token(rt, "alice", ["viewer"]).encode()
        hp = rt._tokens_hp().value
        memo = rt._token_memo()
        assert sp.guard_known(memo, hp, args.route_at, tok, b"k") is None  # not kept yet: no call made
        fields_py, claims_py = rt._guard_call(tok, args, b"k")
        fields_c, claims_c = sp.guard_known(memo, hp, args.route_at, tok, b"k")
        assert claims_c is claims_py and fields_c[:7] == fields_py[:7] and fields_c[7] == fields_py[7] - 1
        assert type(sp.guard_known(memo, hp, args.route_at, tok, b"k" * 100_000)) is int  # the status of an error
        for fields in (fields_c, fields_c[:5] + (_abi.BITSEC_GUARD_NOT_CHECKED, 0, 0, 0, 0, 0),
                       fields_c[:6] + (2 ** 62, 0, 7, 0, 0)):
            want = mw._outcome({}, entry.requirement, entry.template, fields, claims_c, "default")
            got = sp.allowed(guard_mod.GuardResult, entry.requirement, entry.template, claims_c, fields)
            assert got == want and got._wire == want._wire and got.rate_headers == want.rate_headers
        with pytest.raises(TypeError):
            sp.allowed(guard_mod.GuardResult, entry.requirement, entry.template, claims_c, fields_c[:5])
        with pytest.raises(TypeError):
            sp.guard_known([], hp, args.route_at, tok, b"k")


def test_odd_values_give_the_python_record_not_an_error(tmp_path: Path) -> None:
    # A value with no UTF-8 form (a lone surrogate in the path, the request id or a path
    # parameter: a server other than uvicorn, or a middleware, can give one) and a status
    # beyond a C long: the compiled record is the Python one, never an exception (the record
    # was lost: the writer logged the error and dropped it).
    record = guard_mod._compiled_record
    assert record is not None
    with bitsec.Runtime(config(tmp_path)) as plain:
        mw, entry = _audited_route(plain)
        claims = plain.verify_token(token(plain, "alice"))
        for path, rid, q, status in (("/one/\ud800", "r", "7", 200), ("/one/7", "r\ud800", "7", 200),
                                     ("/one/7", "r", "\udc80", 200), ("/one/7", "r", "7", 2 ** 64),
                                     ("/one/7", "r", "7", -(2 ** 70))):
            for _ in range(2):
                scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": ("10.0.0.1", 1),
                         "state": {"bitsec_claims": claims}}
                want = mw._record_text(entry, scope, scope["state"], status, rid, b"ua", {"q": q})
                scope["state"] = dict(scope["state"])
                got = record(mw._record_text, mw, entry, scope, scope["state"], status, rid, b"ua", {"q": q})
                assert got == want and want is not None, (path, rid, q, status)


def test_the_header_pass_leaves_odd_containers_to_the_loop() -> None:
    # What no server sends but the loop reads: a bytearray name (equal to bytes), a first
    # value that is None (the loop takes the next), a list subclass: the same answers.
    class Headers(list):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 0

    for headers in ([(bytearray(b"authorization"), b"Bearer t")],
                    [(b"authorization", None), (b"authorization", b"Bearer t")],
                    Headers([(b"authorization", b"Bearer t")]),
                    [(b"authorization", b"Bearer t"), (memoryview(b"user-agent"), b"ua")]):
        found = guard_mod._scan(headers)
        assert (found if found is not None else _python_scan(headers)) == _python_scan(headers), headers


def test_a_subclass_that_writes_its_own_records_is_not_bypassed(tmp_path: Path) -> None:
    # A GuardMiddleware subclass that overrides _record_text has its records written by it,
    # also where the compiled record could write the common one.
    class Marked(GuardMiddleware):
        def _record_text(self, *a: Any) -> str | None:
            text = super()._record_text(*a)
            return None if text is None else text[:-2] + ',"marked":true}}'

    with bitsec.Runtime(config(tmp_path)) as rt:
        app = make_app(rt, middleware=Marked)
        with TestClient(app) as c:
            for _ in range(3):  # (the second on: every part of the record kept)
                assert c.get("/me", headers={"Authorization": f"Bearer {token(rt, 'alice')}"}).status_code == 200
        recs = [r for r in audit_records(tmp_path, rt) if r["details"]["path"] == "/me"]
        assert len(recs) == 3 and all(r["details"].get("marked") is True for r in recs), recs
