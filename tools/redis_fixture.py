#!/usr/bin/env python3
"""The one Redis fixture of every test suite (Swift, C, Python).

Starts a real `redis-server` on 127.0.0.1 on a free port, without persistence, in a
temporary directory, and stops it by PID -- also when the tests fail or are interrupted.

    python3 tools/redis_fixture.py run -- swift test      # exports BITSEC_TEST_REDIS_PORT
    from redis_fixture import RedisServer                 # pytest's conftest uses this

A missing redis-server is an error, never a skip: `make test` installs it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server process owned by this object (start/stop/kill/pause/resume by PID)."""

    def __init__(self, password: str | None = None, port: int | None = None) -> None:
        self.password = password
        self.port = port or 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="bitsec-redis-")

    @property
    def socket_path(self) -> str:
        return os.path.join(self.dir, "redis.sock")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, attempts: int = 5) -> "RedisServer":
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(exe):
            raise RuntimeError("redis-server is not installed (make test installs it with apt)")
        last = ""
        for _ in range(attempts):
            port = self.port or free_port()
            args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", self.dir, "--daemonize", "no",
                    "--unixsocket", self.socket_path, "--unixsocketperm", "700", "--protected-mode", "yes", "--loglevel", "warning"]
            if self.password:
                args += ["--requirepass", self.password]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                    break
                if self._ready(port):
                    self.port = port
                    return self
                time.sleep(0.02)
            self.stop()
        raise RuntimeError(f"redis-server did not start: {last.strip()[:300]}")

    def _ready(self, port: int) -> bool:
        if not self.password:
            return ping(port)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                pw = self.password.encode()
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw))
                return s.recv(16).startswith(b"+OK")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=5)
                except ProcessLookupError:
                    pass
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as an outage."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        """Starts again on the same port (after kill or stop)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "run" or "--" not in argv:
        print("usage: redis_fixture.py run -- COMMAND...", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1:]
    server = RedisServer().start()
    env = dict(os.environ, BITSEC_TEST_REDIS_PORT=str(server.port), BITSEC_TEST_REDIS_PID=str(server.pid),
               BITSEC_TEST_REDIS_SOCKET=server.socket_path)
    child: subprocess.Popen[bytes] | None = None

    def forward(sig: int, _frame: object) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        child = subprocess.Popen(cmd, env=env)
        return child.wait()
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
