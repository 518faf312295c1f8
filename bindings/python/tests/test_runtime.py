from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import bitsec
from bitsec import _abi
from bitsec import _native


def test_open_from_dict_json_bytes_and_path(tmp_path: Path) -> None:
    cfg = {"redis": {"port": 7001}}
    p = tmp_path / "bitsec.json"
    p.write_text(json.dumps(cfg))
    for source in (cfg, json.dumps(cfg), json.dumps(cfg).encode(), str(p), p):
        with bitsec.Runtime(source) as rt:
            assert rt.describe()["sections"]["redis"]["endpoint"] == "127.0.0.1:7001"
        assert rt.closed


def test_unknown_field_is_a_config_error_naming_it() -> None:
    with pytest.raises(bitsec.ConfigError) as e:
        bitsec.Runtime({"redis": {"hots": "x"}})
    assert e.value.detail == "unknown field redis.hots"
    assert e.value.code == _abi.BITSEC_E_CONFIG
    assert isinstance(e.value, ValueError)


def test_bad_documents() -> None:
    with pytest.raises(bitsec.ConfigError, match="invalid JSON"):
        bitsec.Runtime('{"redis": ')
    with pytest.raises(bitsec.ConfigError, match="duplicate member name"):
        bitsec.Runtime('{"redis": {}, "redis": {}}')
    with pytest.raises(bitsec.ConfigError, match="cannot open"):
        bitsec.Runtime("/nonexistent/bitsec.json")
    with pytest.raises(bitsec.InvalidArgumentError):
        bitsec.Runtime("/tmp/a\0b")
    with pytest.raises(TypeError):
        bitsec.Runtime(42)  # type: ignore[arg-type]
    with pytest.raises(bitsec.TooLargeError):
        bitsec.Runtime(b"{" + b" " * (4 * 1024 * 1024) + b"}")


def test_secrets_never_appear_in_errors_or_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITSEC_TEST_PW", "hunter2-secret")
    with pytest.raises(bitsec.ConfigError) as e:
        bitsec.Runtime({"redis": {"password": {"value": "hunter2-secret"}}})
    assert "hunter2" not in str(e.value)
    with bitsec.Runtime({"redis": {"password": {"env": "BITSEC_TEST_PW"}}}) as rt:
        assert "hunter2" not in json.dumps(rt.describe())
        assert rt.describe()["sections"]["redis"]["auth"] is True


def test_closed_runtime_raises() -> None:
    rt = bitsec.Runtime({})
    rt.close()
    rt.close()
    with pytest.raises(bitsec.ClosedError):
        rt.describe()


def test_closed_handle_through_the_c_function() -> None:
    rt = bitsec.Runtime({})
    h = rt.handle
    rt.close()
    with pytest.raises(bitsec.ClosedError):
        _native.check(_native.redis_ping(h, None))


def test_not_configured() -> None:
    with bitsec.Runtime({}) as rt, pytest.raises(bitsec.NotConfiguredError):
        rt.redis_ping()


def test_random_bytes() -> None:
    a, b = bitsec.random_bytes(32), bitsec.random_bytes(32)
    assert len(a) == 32 and a != b
    assert bitsec.random_bytes(0) == b""
    with pytest.raises(bitsec.TooLargeError):
        bitsec.random_bytes(64 * 1024 * 1024)


def test_redis_ping_against_real_server(redis_mode_config: dict) -> None:
    with bitsec.Runtime(redis_mode_config) as rt:
        assert rt.redis_ping() >= 0


def test_redis_down_is_backend_unavailable(fresh_redis) -> None:  # type: ignore[no-untyped-def]
    cfg = {"redis": {"port": fresh_redis.port, "command_timeout_ms": 300, "reconnect_backoff_ms": 1}}
    with bitsec.Runtime(cfg) as rt:
        assert rt.redis_ping() >= 0
        fresh_redis.kill()
        with pytest.raises(bitsec.BackendUnavailableError) as e:
            rt.redis_ping()
        assert isinstance(e.value, ConnectionError)
        fresh_redis.restart()
        # Recovery is automatic once the server is back (after at most the backoff).
        for _ in range(50):
            try:
                assert rt.redis_ping() >= 0
                break
            except bitsec.BackendUnavailableError:
                import time
                time.sleep(0.01)
        else:
            pytest.fail("did not reconnect")


def test_paused_server_times_out(fresh_redis) -> None:  # type: ignore[no-untyped-def]
    cfg = {"redis": {"port": fresh_redis.port, "command_timeout_ms": 200}}
    with bitsec.Runtime(cfg) as rt:
        assert rt.redis_ping() >= 0
        fresh_redis.pause()
        try:
            with pytest.raises(bitsec.BackendUnavailableError, match="no reply within 200 ms"):
                rt.redis_ping()
        finally:
            fresh_redis.resume()


def test_concurrent_use_from_threads(redis_mode_config: dict) -> None:
    errors: list[BaseException] = []
    with bitsec.Runtime(redis_mode_config) as rt:
        def work() -> None:
            try:
                for i in range(200):
                    assert "sections" in rt.describe()
                    if i % 20 == 0:
                        rt.redis_ping()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
