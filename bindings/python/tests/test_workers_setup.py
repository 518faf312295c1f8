"""The pieces of the multi-worker deployment of the reference service that need no running
workers: the ``store`` section it configures (store.py), the gunicorn command serve.py
runs, the application factory of asgi.py and the test-only worker header."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

with __import__("warnings").catch_warnings():
    __import__("warnings").simplefilter("ignore")
    from fastapi.testclient import TestClient

from refsvc_support import ROOT, Service

from examples.fastapi_service import asgi, serve, store  # noqa: E402  (refsvc_support puts ROOT on sys.path)


def test_the_host_store_section_names_a_region_per_data_directory(tmp_path: Path) -> None:
    a = store.store_section(tmp_path / "a", enabled=True)
    b = store.store_section(tmp_path / "b", enabled=True)
    assert a is not None and b is not None
    assert a["default"] == "host" and a["host"]["directory"] == "/dev/shm"
    name = a["host"]["name"]
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name), name
    assert name != b["host"]["name"]  # two services on one host never share a region
    # the same directory, however it is spelled, is the same region (a restart finds its state)
    (tmp_path / "a").mkdir()
    assert store.region_name(tmp_path / "a" / ".." / "a") == name
    assert store.store_section(tmp_path / "a", "/srv/shm", enabled=True)["host"]["directory"] == "/srv/shm"  # type: ignore[index]
    assert store.region_file(tmp_path / "a", "/srv/shm") == Path(f"/srv/shm/bitsec-{name}.region")
    assert store.store_section(tmp_path / "a", enabled=False) is None
    assert store.store_section(tmp_path / "a") == (a if store.HOST_STORE else None)


def test_serve_runs_the_documented_gunicorn_command() -> None:
    with socket.socket() as sock:
        argv = serve.gunicorn_argv(4, sock, access_log=False)
        assert argv[1:] == ["-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "4", "--preload",
                            "--bind", f"fd://{sock.fileno()}", "--chdir", str(ROOT), "--graceful-timeout", "5",
                            "--no-control-socket", "examples.fastapi_service.asgi:app_from_env()"]
    text = (ROOT / "docs" / "fastapi.md").read_text()
    assert "gunicorn -k uvicorn_worker.UvicornWorker -w 4 --preload" in text
    assert "uvicorn --workers 4 --factory examples.fastapi_service.asgi:app_from_env" in text


def test_the_application_factory_reads_its_settings_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(asgi.DATA_DIR_ENV, raising=False)
    with pytest.raises(RuntimeError, match=asgi.DATA_DIR_ENV):
        asgi.app_from_env()
    monkeypatch.setenv(asgi.DATA_DIR_ENV, str(tmp_path / "data"))
    (tmp_path / "shm").mkdir()
    monkeypatch.setenv(asgi.STORE_DIR_ENV, str(tmp_path / "shm"))
    app = asgi.app_from_env()
    assert app.state.data_dir == (tmp_path / "data").resolve()
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert app.state.bitsec.describe()["sections"].get("redis") is None
    store.region_file(tmp_path / "data", tmp_path / "shm").unlink(missing_ok=True)


def test_the_worker_header_only_for_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BITSEC_REFSVC_TEST_WORKER", raising=False)
    plain = Service(tmp_path / "plain")
    with plain.client:
        assert "x-bitsec-worker" not in plain.client.get("/health").headers
    monkeypatch.setenv("BITSEC_REFSVC_TEST_WORKER", "1")
    marked = Service(tmp_path / "marked")
    with marked.client:
        for path in ("/health", "/api/v1/equipment"):  # also on a 401
            assert marked.client.get(path).headers["x-bitsec-worker"] == str(os.getpid())
