"""Shared by test_workers.py: the reference service run as several worker processes on one
host, the way it is deployed, over real HTTP.

``WorkerService`` starts ``serve.py --workers N`` (uvicorn's ``--workers`` supervisor, or
``--server gunicorn``: gunicorn with uvicorn-worker and ``--preload``, which replaces
serve.py, so the PID is the master's either way) on a free loopback port with a temporary
data directory and the embedded default (no Redis: the host store), waits until every
worker answers, and stops it by PID: the master first (SIGTERM, then SIGKILL), then checks
that its workers are gone.

Every request goes over a NEW connection (no keep-alive, no pool), so the kernel hands it to
whichever worker accepts first; the service runs with ``BITSEC_REFSVC_TEST_WORKER=1`` and
names the worker that served each response in ``X-Bitsec-Worker``. Requests can come from
any 127.0.0.0/8 source address (``client=``): the service keys its rate limits and login
guard by client address, so each test's traffic uses addresses of its own.

The service's configuration is copied into the test's directory with one change: the
``auth`` category allows 10 requests per hour instead of per minute. A 10-per-minute bucket
refills one request every 6 s, so on a slow machine a burst could earn an 11th; per hour,
"exactly 10 allowed" depends on no clock.
"""
from __future__ import annotations

import http.client
from http import HTTPStatus
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICE = ROOT / "examples" / "fastapi_service"
SERVE = SERVICE / "serve.py"
API = "/api/v1"
WORKER_HEADER = "x-bitsec-worker"
AUTH_LIMIT = 10  # the auth category's capacity in the service's config.json

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.fastapi_service.store import region_file  # noqa: E402

SERVERS = ("uvicorn", "gunicorn")


@dataclass
class Answer:
    """One request's outcome: the response, or the connection error that replaced it."""
    method: str
    path: str
    status: int | None
    worker: int | None
    request_id: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


def _children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (every thread's ``children`` list in /proc)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return sorted(set(out))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class WorkerService:
    """The reference service with ``workers`` worker processes under ``server``."""

    def __init__(self, base: Path, server: str, workers: int = 4, extra: Sequence[str] = (),
                 configure: Callable[[dict[str, Any]], None] | None = None) -> None:
        assert server in SERVERS
        self.server, self.workers = server, workers
        self.data_dir = base / "data"
        self.store_dir = base / "store"
        self.config_dir = base / "config"
        self.store_dir.mkdir(parents=True)
        self.config_dir.mkdir(parents=True)
        self.config_path = self.config_dir / "config.json"
        self.policy_path = self.config_dir / "policy.json"
        cfg = json.loads((SERVICE / "config.json").read_text())
        cfg["rate_limits"]["categories"]["auth"]["period_seconds"] = 3600
        cfg["passwords"]["ln"] = 14  # a cheaper scrypt than production's 2^17: concurrent logins
        if configure is not None:
            configure(cfg)  # a benchmark's changes
        self.config_path.write_text(json.dumps(cfg, indent=2))
        shutil.copy(SERVICE / "policy.json", self.policy_path)
        self.log_path = base / "serve.log"
        self.log = open(self.log_path, "wb")
        env = os.environ.copy()
        env["BITSEC_REFSVC_TEST_WORKER"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVE), "--data-dir", str(self.data_dir), "--url-file", str(self.data_dir / "url"),
             "--config", str(self.config_path), "--store-dir", str(self.store_dir), "--no-access-log",
             "--workers", str(workers), "--server", server, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        self.master = self.proc.pid
        self.answers: list[Answer] = []  # every request made, in the order answered
        self._lock = threading.Lock()
        try:
            self.url = self._wait_ready()
            self.users = {u["username"]: u for u in json.loads((self.data_dir / "users.json").read_text())}
        except BaseException:
            self.stop(check=False)
            raise

    # ---- life cycle ----

    def _wait_ready(self) -> str:
        """The URL once every worker has answered ``/health`` (a worker that has not finished
        starting accepts nothing, so the first answers all come from the first ready ones)."""
        deadline = time.monotonic() + 120
        url = None
        answered: set[int] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve.py --workers {self.workers} --server {self.server} exited with "
                            f"{self.proc.returncode}:\n{self.output()}")
            url_file = self.data_dir / "url"
            if url is None and url_file.exists() and url_file.read_text().strip():
                url = url_file.read_text().strip()
            if url is not None:
                self.url = url
                for a in self.burst([("GET", "/health", {})] * 8, threads=8):
                    if a.status == HTTPStatus.OK and a.worker is not None:
                        answered.add(a.worker)
                if len(answered) >= self.workers:
                    # the PIDs the workers report are the master's children (worker discovery)
                    assert answered <= set(self.worker_pids()), (answered, self.worker_pids())
                    return url
            time.sleep(0.1)
        pytest.fail(f"not every worker answered /health (answered: {sorted(answered)}; "
                    f"workers: {self.worker_pids()}):\n{self.output()}")

    def worker_pids(self) -> list[int]:
        """The worker processes: the master's children (uvicorn's spawn start method also
        runs a resource tracker, which is not a worker)."""
        return [p for p in _children(self.master) if alive(p) and "resource_tracker" not in _cmdline(p)]

    def kill_worker(self, pid: int) -> None:
        assert pid in self.worker_pids(), f"{pid} is not a worker of {self.master}"
        os.kill(pid, signal.SIGKILL)

    def wait_workers(self, count: int, excluding: Iterable[int] = (), bound: float = 60) -> list[int]:
        """The worker PIDs once ``count`` live workers exist, none of them in ``excluding``
        (a killed worker's replacement has started)."""
        gone = set(excluding)
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            pids = [p for p in self.worker_pids() if p not in gone]
            if len(pids) >= count:
                return pids
            if self.proc.poll() is not None:
                pytest.fail(f"the master exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"no {count} workers besides {sorted(gone)}: {self.worker_pids()}\n{self.output()}")

    def stop(self, check: bool = True) -> int | None:
        """SIGTERM to the master (SIGKILL after 20 s), then its workers must be gone: any
        left behind are killed, and ``check`` fails the test for them. Returns the master's
        exit status. Removes the host store's region file."""
        workers = self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        left = []
        deadline = time.monotonic() + 10
        for pid in workers:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                left.append(pid)
                os.kill(pid, signal.SIGKILL)
        self.log.close()
        region = region_file(self.data_dir, self.store_dir)
        if region.exists():
            region.unlink()
        if check and left:
            pytest.fail(f"workers {left} outlived their master {self.master}:\n{self.output()}")
        return self.proc.returncode

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.jsonl"

    # ---- requests ----

    def request(self, method: str, path: str, *, client: str = "127.0.0.1", token: str | None = None,
                json_body: Any = None, headers: dict[str, str] | None = None) -> Answer:
        """One request on a new connection from ``client`` (an address of 127.0.0.0/8),
        with an ``X-Request-ID`` of its own. A connection error is an Answer without status."""
        rid = uuid.uuid4().hex
        h = {"X-Request-ID": rid, "Connection": "close", **(headers or {})}
        if token:
            h["Authorization"] = f"Bearer {token}"
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        host, _, port = self.url.removeprefix("http://").partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(client, 0))
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            content = r.read()
        except (OSError, http.client.HTTPException) as e:
            a = Answer(method, path, None, None, rid, error=f"{type(e).__name__}: {e}")
        else:
            headers_in = {k.lower(): v for k, v in r.getheaders()}
            worker = int(headers_in[WORKER_HEADER]) if WORKER_HEADER in headers_in else None
            a = Answer(method, path, r.status, worker, rid, headers_in, content)
        finally:
            conn.close()
        with self._lock:
            self.answers.append(a)
        return a

    def burst(self, requests: Sequence[tuple[str, str, dict[str, Any]]], threads: int = 8) -> list[Answer]:
        """``requests`` (method, path, keyword arguments of ``request``) sent concurrently
        on ``threads`` threads, each on a new connection; the answers in order."""
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(lambda r: self.request(r[0], r[1], **r[2]), requests))

    def login(self, username: str, *, client: str = "127.0.0.1", password: str | None = None,
              **extra: Any) -> Answer:
        pw = self.users[username]["password"] if password is None else password
        return self.request("POST", f"{API}/auth/login", client=client,
                            json_body={"username": username, "password": pw, **extra})

    def token(self, username: str, *, client: str = "127.0.0.1") -> str:
        a = self.login(username, client=client)
        assert a.status == HTTPStatus.OK, (a.status, a.body, a.error)
        return str(a.json()["access_token"])


def distinct_workers(answers: Iterable[Answer]) -> set[int]:
    return {a.worker for a in answers if a.worker is not None}


def until_workers(send: Callable[[], Answer], at_least: int, bound: int) -> list[Answer]:
    """Sends ``send()`` until its answers came from ``at_least`` distinct workers, at most
    ``bound`` times; the answers."""
    out: list[Answer] = []
    while len(out) < bound:
        out.append(send())
        if len(distinct_workers(out)) >= at_least:
            break
    return out


def audit_records(path: Path) -> list[dict[str, Any]]:
    """The records of an audit file (one JSON object a line)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verify_audit(path: Path) -> dict[str, Any]:
    """``bitsec audit verify --json`` on ``path``: its report; fails the test unless the
    command succeeds."""
    r = subprocess.run([sys.executable, "-m", "bitsec", "audit", "verify", "--json", str(path)],
                       capture_output=True, text=True, env=os.environ.copy())
    assert r.returncode == 0, f"bitsec audit verify exited with {r.returncode}: {r.stdout}{r.stderr}"
    return json.loads(r.stdout)  # type: ignore[no-any-return]
