#!/usr/bin/env python3
"""The one Redis fixture of every test suite (Swift, C, Python).

Starts a real `redis-server` on 127.0.0.1 on a free port, without persistence, in a
temporary directory, and stops it by PID -- also when the tests fail or are interrupted.

    python3 tools/redis_fixture.py run -- swift test      # exports BITSEC_TEST_REDIS_PORT
    from redis_fixture import RedisServer                 # pytest's conftest uses this

`run` also starts a TLS-only server (`--port 0 --tls-port P`) with certificates made by
`make_certs` (the `openssl` command, in a temporary directory): a CA, a server certificate
for IP 127.0.0.1 and DNS localhost, a client certificate, and a second, unrelated CA. It
exports BITSEC_TEST_REDIS_TLS_PORT, BITSEC_TEST_REDIS_TLS_CA, BITSEC_TEST_REDIS_TLS_CERT,
BITSEC_TEST_REDIS_TLS_KEY and BITSEC_TEST_REDIS_TLS_OTHER_CA. `SentinelSet` starts a
primary, a replica and three sentinels (`redis-server --sentinel`) for failover tests.

`run` also starts a Redis Cluster of six nodes (three primaries, three replicas, a short
`cluster-node-timeout` so that a replica takes over a killed primary within seconds) and
exports BITSEC_TEST_REDIS_CLUSTER_NODES (`127.0.0.1:port,...`) and
BITSEC_TEST_REDIS_CLUSTER_DIR (one directory per node, named by its port, holding its
`redis.conf` and `redis.pid`: a test kills a node by that PID and restarts it with that file).
It also starts a TLS-only cluster of three primaries with the same certificates (bus and
replication over TLS too) and exports BITSEC_TEST_REDIS_TLS_CLUSTER_NODES.

`run` also starts a `SentinelSet` (a primary, a replica, three sentinels watching it as
"mymaster") and exports BITSEC_TEST_REDIS_SENTINELS (`127.0.0.1:port,...`) and
BITSEC_TEST_REDIS_SENTINEL_MASTER, for the suites parametrised over the Redis modes.

BITSEC_TEST_REDIS_MODES (comma-separated among standalone, cluster, tls, sentinel; all of
them when unset) limits what `run` starts to the standalone server plus the listed modes and
is exported to the command (the test suites read it). The sanitizer targets of the Makefile
set it to `standalone`.

A missing redis-server is an error, never a skip: `make test` installs it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_started(proc: subprocess.Popen[bytes], ready: Callable[[], bool], bound: float = 5) -> tuple[bool, str]:
    """Waits up to ``bound`` seconds for a server process to answer (``ready``): (True, "") once
    it does, (False, its stderr) if it exits first, (False, "") if it never answers."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False, (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
        if ready():
            return True, ""
        time.sleep(0.02)
    return False, ""


def ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Certs:
    """Test certificates made with the `openssl` command into `dir`."""

    def __init__(self, dir: str) -> None:
        self.dir = dir
        self.ca = os.path.join(dir, "ca.pem")
        self.ca_key = os.path.join(dir, "ca.key")
        self.server_cert = os.path.join(dir, "server.pem")
        self.server_key = os.path.join(dir, "server.key")
        self.client_cert = os.path.join(dir, "client.pem")
        self.client_key = os.path.join(dir, "client.key")
        self.other_ca = os.path.join(dir, "other-ca.pem")


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_certs(dir: str | None = None) -> Certs:
    """A CA, a server certificate (SAN IP:127.0.0.1, DNS:localhost), a client certificate
    (clientAuth), all EC P-256 signed by the CA; and an unrelated CA for negative tests."""
    d = dir or tempfile.mkdtemp(prefix="bitsec-certs-")
    c = Certs(d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", c.ca_key, "-out", c.ca, "-days", "2", "-subj", "/CN=bitsec test CA", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "other-ca.key", "-out", c.other_ca, "-days", "2", "-subj", "/CN=bitsec other CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=bitsec test {name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", c.ca, "-CAkey", c.ca_key, "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return c


class RedisServer:
    """A redis-server process owned by this object (start/stop/kill/pause/resume by PID).

    `certs` makes it TLS-only (`--port 0 --tls-port P`); `tls_auth_clients` then requires a
    client certificate. `replicaof` (a port) makes it a replica of that local server."""

    def __init__(self, password: str | None = None, port: int | None = None, certs: Certs | None = None,
                 tls_auth_clients: bool = False, replicaof: int | None = None, extra: list[str] | None = None) -> None:
        self.password = password
        self.port = port or 0
        self.certs = certs
        self.tls_auth_clients = tls_auth_clients
        self.replicaof = replicaof
        self.extra = extra or []
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
            if self.certs:
                c = self.certs
                args[1:3] = ["--port", "0", "--tls-port", str(port)]
                args += ["--tls-cert-file", c.server_cert, "--tls-key-file", c.server_key, "--tls-ca-cert-file", c.ca,
                         "--tls-auth-clients", "yes" if self.tls_auth_clients else "no"]
            if self.replicaof:
                args += ["--replicaof", "127.0.0.1", str(self.replicaof)]
            args += self.extra
            if self.password:
                args += ["--requirepass", self.password]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started, err = wait_started(self.proc, lambda: self._ready(port))
            last = err or last
            if started:
                self.port = port
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start: {last.strip()[:300]}")

    def tls_socket(self, port: int | None = None, timeout: float = 0.5) -> ssl.SSLSocket:
        assert self.certs is not None
        ctx = ssl.create_default_context(cafile=self.certs.ca)
        ctx.load_cert_chain(self.certs.client_cert, self.certs.client_key)
        raw = socket.create_connection(("127.0.0.1", port or self.port), timeout=timeout)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    def command(self, *args: str) -> bytes:
        """One command (plain or TLS), the raw reply's first line(s): for tests' checks."""
        enc = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
        if self.certs:
            with self.tls_socket() as s:
                s.sendall(enc)
                return s.recv(65536)
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(enc)
            return s.recv(65536)

    def _ready(self, port: int) -> bool:
        if self.certs:
            try:
                with self.tls_socket(port, timeout=0.2) as s:
                    s.sendall(b"*1\r\n$4\r\nPING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
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


class Sentinel(RedisServer):
    """One `redis-server --sentinel` watching `master_port` as "mymaster" (quorum 2), with
    short `down-after-milliseconds`/`failover-timeout` so that tests see a failover quickly."""

    def __init__(self, master_port: int, down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 certs: Certs | None = None, password: str | None = None) -> None:
        super().__init__(certs=certs, password=password)
        self.master_port = master_port
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def start(self, attempts: int = 5) -> "Sentinel":
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        last = ""
        for _ in range(attempts):
            port = self.port or free_port()
            conf = os.path.join(self.dir, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\nloglevel warning\n"
                        f"sentinel monitor mymaster 127.0.0.1 {self.master_port} 2\n"
                        f"sentinel down-after-milliseconds mymaster {self.down_after_ms}\n"
                        f"sentinel failover-timeout mymaster {self.failover_timeout_ms}\n"
                        f"sentinel parallel-syncs mymaster 1\n")
                if self.password:
                    f.write(f"requirepass {self.password}\n")
                if self.certs:
                    # TLS only, to clients and to the servers it watches (tls-replication).
                    c = self.certs
                    f.write(f"port 0\ntls-port {port}\ntls-cert-file {c.server_cert}\ntls-key-file {c.server_key}\n"
                            f"tls-ca-cert-file {c.ca}\ntls-auth-clients no\ntls-replication yes\n")
            self.proc = subprocess.Popen([exe, conf, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started, err = wait_started(self.proc, lambda: self._ready(port))
            last = err or last
            if started:
                self.port = port
                return self
            self.stop()
        raise RuntimeError(f"redis sentinel did not start: {last.strip()[:300]}")

    def master_addr(self) -> tuple[str, int] | None:
        data = self.command("SENTINEL", "get-master-addr-by-name", "mymaster").split(b"\r\n")
        if not data or not data[0].startswith(b"*2"):
            return None
        return data[2].decode(), int(data[4])


class SentinelSet:
    """A primary, a replica of it and three sentinels, all on free loopback ports, each
    stopped by PID. `replica_extra` passes options to the replica (`--replica-read-only no`
    lets a test see any write that reached the replica directly). With `certs` every
    server and sentinel is TLS-only, replication included."""

    def __init__(self, replica_extra: list[str] | None = None, certs: Certs | None = None) -> None:
        self.certs = certs
        tls = ["--tls-replication", "yes"] if certs else []
        self.primary = RedisServer(certs=certs, extra=tls)
        self.replica: RedisServer | None = None
        self.replica_extra = (replica_extra or []) + tls
        self.sentinels: list[Sentinel] = []

    def start(self) -> "SentinelSet":
        try:
            self.primary.start()
            self.replica = RedisServer(replicaof=self.primary.port, extra=self.replica_extra, certs=self.certs).start()
            # Wait for the initial sync, so that the replica is eligible for promotion.
            # A check that times out (a TLS handshake on a loaded machine) is asked again.
            def ask(server: RedisServer, *args: str) -> bytes:
                try:
                    return server.command(*args)
                except OSError:
                    return b""

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and b"master_link_status:up" not in ask(self.replica, "INFO", "replication"):
                time.sleep(0.05)
            self.sentinels = [Sentinel(self.primary.port, certs=self.certs).start() for _ in range(3)]
            # Until every sentinel has found the replica and the others, a failover cannot run.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                infos = [ask(sen, "SENTINEL", "replicas", "mymaster") for sen in self.sentinels]
                peers = [ask(sen, "SENTINEL", "sentinels", "mymaster") for sen in self.sentinels]
                if all(str(self.replica.port).encode() in i for i in infos) and all(p.startswith(b"*2") for p in peers):
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("the sentinels did not find the replica and each other within 30 s")
            return self
        except BaseException:
            self.cleanup()
            raise

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def cleanup(self) -> None:
        for s in self.sentinels:
            s.cleanup()
        if self.replica:
            self.replica.cleanup()
        self.primary.cleanup()

    def __enter__(self) -> "SentinelSet":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def port_pair_free(port: int) -> bool:
    """True when `port` and its cluster bus port (+10000) can both be bound on loopback."""
    if port + 10000 > 65535:
        return False
    for p in (port, port + 10000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def _connect(port: int, timeout: float, certs: Certs | None) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if certs is None:
        return raw
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.load_cert_chain(certs.client_cert, certs.client_key)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def command(port: int, *args: str, timeout: float = 1.0, certs: Certs | None = None) -> bytes:
    """One command over a fresh connection (TLS with `certs`); the raw reply (enough for
    status and bulk replies)."""
    payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with _connect(port, timeout, certs) as s:
        s.sendall(payload)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                break
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                if int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2:
                    break
        return data


class RedisCluster:
    """Six redis-server processes in cluster mode (3 primaries, 3 replicas) on loopback ports
    whose bus ports are free too, each in its own directory; stopped by PID (the PID the
    fixture started and the one in the node's pidfile, for nodes a test restarted).
    With `certs` every node is TLS-only (`port 0`, `tls-port`), the cluster bus and
    replication included (`tls-cluster yes`; the nodes present the client certificate to
    each other), so `CLUSTER SLOTS` names the TLS ports."""

    def __init__(self, size: int = 6, replicas: int = 1, node_timeout_ms: int = 1000, certs: Certs | None = None) -> None:
        self.certs = certs
        self.size = size
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.dir = tempfile.mkdtemp(prefix="bitsec-cluster-")
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def nodes(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def conf_path(self, port: int) -> str:
        return os.path.join(self.dir, str(port), "redis.conf")

    def start(self) -> "RedisCluster":
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        if not os.path.exists(exe) or not os.path.exists(cli):
            raise RuntimeError("redis-server and redis-cli are needed (make test installs them with apt)")
        try:
            while len(self.ports) < self.size:
                port = free_port()
                if port in self.ports or not port_pair_free(port):
                    continue
                node_dir = os.path.join(self.dir, str(port))
                os.makedirs(node_dir, exist_ok=True)
                with open(self.conf_path(port), "w") as f:
                    f.write("\n".join([
                        f"port {port}", "bind 127.0.0.1", "protected-mode yes", "daemonize no",
                        f"dir {node_dir}", f"pidfile {node_dir}/redis.pid", "save \"\"", "appendonly no",
                        "cluster-enabled yes", "cluster-config-file nodes.conf",
                        f"cluster-node-timeout {self.node_timeout_ms}", "loglevel warning",
                        f"logfile {node_dir}/redis.log", "",
                    ]))
                    if self.certs:
                        c = self.certs
                        f.write("\n".join([
                            "port 0", f"tls-port {port}", f"tls-cert-file {c.server_cert}", f"tls-key-file {c.server_key}",
                            f"tls-client-cert-file {c.client_cert}", f"tls-client-key-file {c.client_key}",
                            f"tls-ca-cert-file {c.ca}", "tls-auth-clients no", "tls-cluster yes", "tls-replication yes", "",
                        ]))
                proc = subprocess.Popen([exe, self.conf_path(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and proc.poll() is None and not self._ping(port):
                    time.sleep(0.02)
                if proc.poll() is not None or not self._ping(port):
                    proc.kill() if proc.poll() is None else None
                    shutil.rmtree(node_dir, ignore_errors=True)
                    continue  # the port was taken meanwhile: another one
                self.ports.append(port)
                self.procs.append(proc)
            tls = ["--tls", "--cacert", self.certs.ca] if self.certs else []
            subprocess.run([cli, *tls, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                            "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
            self.wait_ok()
            return self
        except BaseException:
            self.cleanup()
            raise

    def _ping(self, port: int) -> bool:
        if self.certs is None:
            return ping(port)
        try:
            return command(port, "PING", timeout=0.2, certs=self.certs).startswith(b"+PONG")
        except OSError:
            return False

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node answers cluster_state:ok and knows every node and slot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                infos = [command(p, "CLUSTER", "INFO", certs=self.certs) for p in self.ports]
                if all(b"cluster_state:ok" in i and b"cluster_slots_ok:16384" in i
                       and b"cluster_known_nodes:%d" % self.size in i for i in infos):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the redis cluster did not reach cluster_state:ok")

    def pids(self) -> list[int]:
        out = [p.pid for p in self.procs if p.poll() is None]
        for port in self.ports:
            try:
                with open(os.path.join(self.dir, str(port), "redis.pid")) as f:
                    pid = int(f.read().strip() or "0")
                if pid > 0 and pid not in out:
                    out.append(pid)
            except (OSError, ValueError):
                pass
        return out

    def cleanup(self) -> None:
        for pid in self.pids():
            # Only a redis-server this fixture (or a test under it) started (it was given a
            # names a configuration file in this fixture's directory, and works in it).
            try:
                if not os.readlink(f"/proc/{pid}/cwd").startswith(self.dir):
                    continue
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()



MODES = ("standalone", "cluster", "tls", "sentinel")


def wanted_modes() -> list[str]:
    """The Redis modes of this run: BITSEC_TEST_REDIS_MODES (comma-separated among
    standalone, cluster, tls, sentinel), all of them when unset. The standalone server is
    always started (most suites use it directly)."""
    raw = os.environ.get("BITSEC_TEST_REDIS_MODES")
    if raw is None:
        return list(MODES)
    modes = [m.strip() for m in raw.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"BITSEC_TEST_REDIS_MODES: unknown mode(s) {unknown}; known: {', '.join(MODES)}")
    return modes


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "run" or "--" not in argv:
        print("usage: redis_fixture.py run -- COMMAND...", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1:]
    modes = wanted_modes()
    started: list[RedisServer | RedisCluster | SentinelSet] = []
    certs: Certs | None = None
    env = dict(os.environ)
    try:
        server = RedisServer().start()
        started.append(server)
        env.update(BITSEC_TEST_REDIS_PORT=str(server.port), BITSEC_TEST_REDIS_PID=str(server.pid),
                   BITSEC_TEST_REDIS_SOCKET=server.socket_path)
        if "tls" in modes or "cluster" in modes:
            certs = make_certs()
        if "tls" in modes:
            assert certs is not None
            tls_server = RedisServer(certs=certs).start()
            started.append(tls_server)
            env.update(BITSEC_TEST_REDIS_TLS_PORT=str(tls_server.port), BITSEC_TEST_REDIS_TLS_CA=certs.ca,
                       BITSEC_TEST_REDIS_TLS_CERT=certs.client_cert, BITSEC_TEST_REDIS_TLS_KEY=certs.client_key,
                       BITSEC_TEST_REDIS_TLS_OTHER_CA=certs.other_ca)
        if "cluster" in modes:
            assert certs is not None
            cluster = RedisCluster().start()
            started.append(cluster)
            tls_cluster = RedisCluster(size=3, replicas=0, certs=certs).start()
            started.append(tls_cluster)
            env.update(BITSEC_TEST_REDIS_CLUSTER_NODES=cluster.nodes, BITSEC_TEST_REDIS_CLUSTER_DIR=cluster.dir,
                       BITSEC_TEST_REDIS_TLS_CLUSTER_NODES=tls_cluster.nodes)
        if "sentinel" in modes:
            # A primary, a replica and three sentinels (quorum 2, down after 1 s, failover
            # timeout 3 s) for the mode-parametrised suites; nothing kills it.
            sentinels = SentinelSet().start()
            started.append(sentinels)
            env.update(BITSEC_TEST_REDIS_SENTINELS=",".join(sentinels.addresses),
                       BITSEC_TEST_REDIS_SENTINEL_MASTER="mymaster")
    except BaseException:
        for s in reversed(started):
            s.cleanup()
        if certs is not None:
            shutil.rmtree(certs.dir, ignore_errors=True)
        raise
    env["BITSEC_TEST_REDIS_MODES"] = ",".join(modes)
    # The host store's test regions: a directory of this run, removed with it (a region file
    # reserves its size in memory when the directory is a tmpfs).
    region_dir = tempfile.mkdtemp(prefix="bitsec-test-regions-")
    env["BITSEC_TEST_REGION_DIR"] = region_dir
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
        for s in reversed(started):
            s.cleanup()
        if certs is not None:
            shutil.rmtree(certs.dir, ignore_errors=True)
        shutil.rmtree(region_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
