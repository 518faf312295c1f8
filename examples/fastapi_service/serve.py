"""Runs the reference service for people: ``make serve`` (and ``make demo``, which wipes
its data directory first).

    python examples/fastapi_service/serve.py [--data-dir DIR] [--port N] [--redis-port N]
                                             [--workers N [--server uvicorn|gunicorn] [--store-dir DIR]]
    python examples/fastapi_service/serve.py migrate|rotate-keys|retention|verify-audit [--data-dir DIR]

- prepares the data directory (default ``build/fastapi_service/``): the SQLite database,
  the audit log and the generated key files of ``create_app``, plus ``users.json`` (mode
  0600) with the demo users' credentials, kept so that a restart shows the same ones;
- creates the demo users once: one per ERP role of ``examples/policies/erp.json`` (viewer,
  operator, manager, admin) in tenant ``plant-a``, three of them also holding an ADR-007 role
  (otto ``inspection.operator``, mia ``inspection.quality_engineer``, ada ``inspection.admin``:
  an administrator acts only on users below her in both families), and an admin of tenant
  ``plant-b``; each with an e-mail address, a name and a phone number (the personal data of
  the GDPR endpoints);
- refuses a database file of an older schema (the first slice's users table had other
  columns): ``--fresh`` wipes the service's files in the data directory first (and its host
  store region file);
- serves the app with uvicorn, one worker, on 127.0.0.1 only (it prints passwords: never on
  a network interface), on ``--port`` or a free port; prints the URL and the credentials,
  and writes the URL to ``--url-file`` once the socket listens (``make demo`` waits on it);
- with ``--workers N`` (``make serve WORKERS=N``): N worker processes on that socket, each
  opening its own bitsec runtime; uvicorn's ``--workers`` (the application factory
  ``examples.fastapi_service.asgi:app_from_env`` imported by name in each worker), or with
  ``--server gunicorn`` the documented gunicorn command (``gunicorn -k
  uvicorn_worker.UvicornWorker -w N --preload``, which replaces this process, so its PID is
  gunicorn's master). Both restart a worker that dies. The workers share their state
  through the ``host`` store (store.py: a region file in ``--store-dir``, default
  ``/dev/shm``, named after the data directory) or through Redis (``--redis-port``).

The state is the embedded default (in process, no Redis) unless ``--redis-port`` is given:
rate limits, brute-force counts, revocations and TOTP replay state then live in that
redis-server. SIGINT/SIGTERM stop it gracefully (the audit queue is flushed).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `examples.fastapi_service` importable
    sys.path.insert(0, str(ROOT))

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"

#: (username, roles, tenant, full name): one user per ERP role in plant-a, three of them also
#: holding an ADR-007 role (policy.json's ``inspection.`` family), one admin of plant-b. ada
#: administers both families: the walkthrough has her anonymise mia, whose roles are below
#: hers in both (an ERP admin alone has no authority over an inspection.quality_engineer).
DEMO_USERS = [
    ("vera", ["viewer"], "plant-a", "Vera Lindqvist"),
    ("otto", ["operator", "inspection.operator"], "plant-a", "Otto Brandt"),
    ("mia", ["manager", "inspection.quality_engineer"], "plant-a", "Mia Kowalski"),
    ("ada", ["admin", "inspection.admin"], "plant-a", "Ada Moreau"),
    ("bruno", ["admin"], "plant-b", "Bruno Esposito"),
]
USERS_FILE = "users.json"
#: What --fresh removes from the data directory (the service's files, nothing else).
SERVICE_FILES = ("service.db", "service.db-journal", "service.db-wal", "service.db-shm", "audit.jsonl*",
                 USERS_FILE, "field-key", "jwt-key", "csrf-key", "jwt-rs256-*.pem", "token-keys.json", "url")


def roles_of(u: dict[str, Any]) -> list[str]:
    """The roles of a users.json entry (``roles``; ``role``, one name, in files of the first slice)."""
    return list(u["roles"]) if "roles" in u else str(u["role"]).split()


def wipe(data_dir: Path) -> None:
    """Removes the service's files (SERVICE_FILES) from ``data_dir``."""
    for pattern in SERVICE_FILES:
        for p in data_dir.glob(pattern):
            if p.is_file():
                p.unlink()


def schema_problem(app: Any) -> str | None:
    """Why the database cannot be used by this version of the service (a table of an older
    schema lacks columns: ``create_all`` creates missing tables, it does not alter existing
    ones), or None."""
    from sqlalchemy import inspect

    insp = inspect(app.state.engine)
    for name, table in app.state.models.Base.metadata.tables.items():
        if not insp.has_table(name):
            continue
        have = {c["name"] for c in insp.get_columns(name)}
        missing = sorted(c.name for c in table.columns if c.name not in have)
        if missing:
            return f"table {name} has no column {', '.join(missing)}"
    return None


def _write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` with mode 0600 (atomically: a temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def ensure_users(app: Any, data_dir: Path, config: str) -> list[dict[str, Any]]:
    """The demo users of ``data_dir``: created (random passwords) on the first start and
    recorded in ``users.json``; read back from it afterwards."""
    import secrets

    from sqlalchemy import select

    import bitsec
    from examples.fastapi_service import create_user
    from examples.fastapi_service.app import load_config

    path = data_dir / USERS_FILE
    users: list[dict[str, str]] = json.loads(path.read_text()) if path.exists() else []
    known = {u["username"] for u in users}
    User = app.state.models.User
    with app.state.sessions() as db:
        # anonymised accounts (deleted-user-…) are no demo user's any more: not a stray user
        in_db = set(db.scalars(select(User.username).where(User.anonymized_at.is_(None))))
    missing = [u for u in in_db if u not in known]
    if missing:
        raise SystemExit(f"serve: {data_dir} has users without recorded credentials ({', '.join(sorted(missing))}); "
                         f"remove the directory to start over")
    todo = [u for u in DEMO_USERS if u[0] not in known]
    if not todo:
        return users
    # The personal data columns are encrypted through the app's runtime, which the lifespan
    # opens only once uvicorn runs: until then, a runtime with the same field keys and
    # nothing else (no audit sink: the service's trail has one writer).
    fields = load_config(config, data_dir)["fields"]
    with bitsec.Runtime({"fields": fields}) as rt:
        app.state.bitsec = rt
        try:
            for username, roles, tenant, full_name in todo:
                password = secrets.token_urlsafe(12)
                email = f"{username}@{tenant}.example"
                create_user(app, username, password, roles, tenant, email=email, full_name=full_name,
                            phone=f"+49 30 5550 {len(users) + 1:04d}")
                users.append({"username": username, "password": password, "roles": list(roles),
                              "tenant_id": tenant, "email": email})
                _write_private(path, json.dumps(users, indent=2) + "\n")
        finally:
            del app.state.bitsec
    return users


def listening_socket(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` (0: a free port), handed to uvicorn, so that
    the port printed is the port served (no probe-then-bind race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as e:
        sock.close()
        raise SystemExit(f"serve: cannot listen on {HOST}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def banner(url: str, data_dir: Path, users: list[dict[str, Any]], redis: dict[str, Any] | None,
           mfa: set[str], gone: set[str] | None = None, state: str | None = None) -> str:
    state = state or (f"Redis at {redis['host']}:{redis['port']}" if redis else "embedded state (in process, no Redis)")
    lines = [f"bitsec reference service: {url}",
             f"  data: {data_dir} (service.db, audit.jsonl, keys, {USERS_FILE}); {state}",
             "  users (username  tenant  password  roles):"]
    width = max(len(u["username"]) for u in users)
    for u in users:
        note = "  + TOTP (enrolled)" if u["username"] in mfa else ""
        note = "  (anonymised: cannot log in)" if u["username"] in (gone or set()) else note
        lines.append(f"    {u['username']:<{width}}  {u['tenant_id']:<7}  {u['password']}  "
                     f"{' + '.join(roles_of(u))}{note}")
    u = users[0]
    lines += ["  try:",
              f"    curl -s -X POST {url}/api/v1/auth/login -H 'Content-Type: application/json' \\",
              f"         -d '{{\"username\": \"{u['username']}\", \"password\": \"{u['password']}\"}}'",
              f"    curl -s {url}/api/v1/equipment -H 'Authorization: Bearer <access_token>'",
              f"    curl -s {url}/metrics"]
    if mfa:
        lines.append(f"  TOTP-enrolled users need a code of their enrolment (\"totp_code\"); "
                     f"--fresh (make serve FRESH=1) starts afresh")
    lines.append("  endpoints: examples/fastapi_service/README.md; Ctrl-C stops the service")
    return "\n".join(lines)


def state_line(redis: dict[str, Any] | None, workers: int, server: str, store: dict[str, Any] | None) -> str:
    """What the banner says of the processes and of where their state lives."""
    if redis:
        state = f"Redis at {redis['host']}:{redis['port']}"
    elif workers == 1:
        state = "embedded state (in process, no Redis)"
    elif store:
        state = f"host store (region {store['host']['name']} in {store['host']['directory']}, no Redis)"
    else:
        state = "in process in each worker (limits hold per worker: the host store is not enabled, store.py)"
    return f"{workers} worker{'s' if workers > 1 else ''} ({server}); {state}"


def worker_env(data_dir: Path, config: str, store_dir: str | None, redis: dict[str, Any] | None) -> None:
    """Hands the settings to the workers' application factory (asgi.py) through the environment."""
    from examples.fastapi_service import asgi

    os.environ[asgi.DATA_DIR_ENV] = str(data_dir)
    os.environ[asgi.CONFIG_ENV] = str(Path(config).resolve())
    if store_dir:
        os.environ[asgi.STORE_DIR_ENV] = store_dir
    if redis:
        os.environ[asgi.REDIS_HOST_ENV] = str(redis["host"])
        os.environ[asgi.REDIS_PORT_ENV] = str(redis["port"])
        if redis.get("key_prefix"):
            os.environ[asgi.REDIS_PREFIX_ENV] = str(redis["key_prefix"])


def gunicorn_argv(workers: int, sock: socket.socket, access_log: bool) -> list[str]:
    """The documented gunicorn command, bound to ``sock`` (inherited: ``fd://``)."""
    argv = [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", str(workers), "--preload",
            "--bind", f"fd://{sock.fileno()}", "--chdir", str(ROOT), "--graceful-timeout", "5",
            # gunicorn's control socket is one path per user (~/.gunicorn): two services would meet
            "--no-control-socket"]
    if access_log:
        argv += ["--access-logfile", "-"]
    return argv + ["examples.fastapi_service.asgi:app_from_env()"]


def serve_workers(sock: socket.socket, workers: int, server: str, access_log: bool) -> int:
    """Serves with ``workers`` processes (uvicorn's supervisor, or gunicorn in place of this
    process); returns when the service stops."""
    if server == "gunicorn":
        argv = gunicorn_argv(workers, sock, access_log)
        os.execv(argv[0], argv)  # the listening socket stays open across exec (inheritable)
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("examples.fastapi_service.asgi:app_from_env", factory=True, workers=workers,
                            lifespan="on", access_log=access_log, log_level="info", timeout_graceful_shutdown=5)
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    # a worker whose application failed to start stops the supervisor (it would fail again)
    return 1 if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes) else 0


COMMANDS = ("migrate", "rotate-keys", "retention", "verify-audit")


def operate(argv: list[str]) -> int:
    """The operator's commands (the service may run meanwhile: the audit file is shared):

    - ``migrate``: upgrades the database to the newest schema revision (migrations/);
    - ``rotate-keys [--force]``: a new signing key in the slot not signing now (keys.py); it
      signs from the next start, the previous key keeps verifying its tokens;
    - ``retention [--days N]``: purges personal data older than the period (retention.py);
    - ``verify-audit``: verifies the audit trail, retention records included (exit 1 if not).
    """
    import asyncio

    from examples.fastapi_service import create_app
    from examples.fastapi_service.app import load_config
    from examples.fastapi_service.keys import rotate
    from examples.fastapi_service.migrations import MigrationError, upgrade
    from examples.fastapi_service.retention import purge, verify_trail

    ap = argparse.ArgumentParser(prog=f"serve.py {argv[0]}")
    ap.add_argument("--data-dir", default=str(ROOT / "build" / "fastapi_service"))
    ap.add_argument("--config", default=str(HERE / "config.json"))
    ap.add_argument("--force", action="store_true", help="rotate-keys: even within the refresh-token lifetime")
    ap.add_argument("--days", type=int, help="retention: the period in days (default: the configuration's)")
    args = ap.parse_args(argv[1:])
    data_dir = Path(args.data_dir).resolve()
    db = f"sqlite:///{data_dir / 'service.db'}"
    if argv[0] == "rotate-keys":
        tokens = load_config(args.config, data_dir)["tokens"]
        from examples.fastapi_service.keys import prepare_keys
        prepare_keys(tokens, data_dir)
        try:
            kid = rotate(tokens, data_dir, force=args.force)
        except ValueError as e:
            raise SystemExit(f"rotate-keys: {e}") from None
        print(f"rotate-keys: {kid} signs from the next start; the previous key keeps verifying its tokens")
        return 0
    try:
        app = create_app(args.config, db, data_dir=data_dir)  # migrates
    except MigrationError as e:
        raise SystemExit(f"{argv[0]}: {e}") from None
    if argv[0] == "migrate":
        print(f"migrate: {db} at revision {upgrade(app.state.engine)[1]}")
        return 0
    if argv[0] == "verify-audit":
        rep = verify_trail(app.state.audit_path)
        print(f"verify-audit: {'intact' if rep.intact else 'NOT intact'}: records {rep.first_seq}..{rep.last_seq}"
              + (f", 1..{rep.purged_through_seq} purged by a retention record" if rep.purged_through_seq else "")
              + (f"; {rep.problem}" if rep.problem else ""))
        return 0 if rep.intact else 1

    async def run() -> Any:
        async with app.router.lifespan_context(app):
            return purge(app, days=args.days)

    rep = asyncio.run(run())
    print(f"retention: {rep.tokens_cleared} token records cleared of address and user agent, {rep.tokens_deleted} "
          f"deleted; {len(rep.files_removed)} audit files removed"
          + (f" (records through seq {rep.purged_through_seq}, named in a retention record)" if rep.files_removed else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return operate(argv)
    ap = argparse.ArgumentParser(description="Run the bitsec reference service on 127.0.0.1 with demo users.")
    ap.add_argument("--data-dir", default=str(ROOT / "build" / "fastapi_service"),
                    help="database, audit log, keys and users.json (default: build/fastapi_service)")
    ap.add_argument("--config", default=str(HERE / "config.json"), help="bitsec configuration of the service")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free port)")
    ap.add_argument("--redis-port", type=int, help="keep the state in the redis-server on 127.0.0.1:PORT")
    ap.add_argument("--redis-host", default="127.0.0.1", help="host of --redis-port (default 127.0.0.1)")
    ap.add_argument("--redis-key-prefix", help="prefix of the service's Redis keys (default: bitsec's)")
    ap.add_argument("--url-file", help="write the URL here once the socket listens")
    ap.add_argument("--no-access-log", action="store_true", help="no uvicorn access log lines")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--server", choices=("uvicorn", "gunicorn"), default="uvicorn",
                    help="what runs the workers: uvicorn --workers (default) or gunicorn with uvicorn-worker and --preload")
    ap.add_argument("--store-dir", help="directory of the host store's region file (several workers, no Redis; "
                                        "default /dev/shm)")
    ap.add_argument("--fresh", action="store_true",
                    help="remove the service's files (database, audit log, keys, users.json) from --data-dir first")
    args = ap.parse_args(argv)
    if not 0 <= args.port <= 65535:
        ap.error("--port must be 0..65535")
    if not 1 <= args.workers <= 256:
        ap.error("--workers must be 1..256")

    import uvicorn
    from sqlalchemy import select

    from examples.fastapi_service import create_app
    from examples.fastapi_service.store import region_file, store_section

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: create_app checks it
    if args.fresh:
        wipe(data_dir)
        # the host store's state (buckets, blocks, revocations) belongs to the wiped service too
        region_file(data_dir, args.store_dir).unlink(missing_ok=True)
    redis: dict[str, Any] | None = None
    if args.redis_port:
        redis = {"host": args.redis_host, "port": args.redis_port}
        if args.redis_key_prefix:
            redis["key_prefix"] = args.redis_key_prefix
    multi = args.workers > 1 or args.server == "gunicorn"
    store = store_section(data_dir, args.store_dir) if multi and not redis else None
    if store is not None:
        Path(store["host"]["directory"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    from examples.fastapi_service.migrations import MigrationError
    try:  # an older database is upgraded in place (migrations/)
        app = create_app(args.config, f"sqlite:///{data_dir / 'service.db'}", data_dir=data_dir, redis=redis,
                         store=store)
    except MigrationError as e:
        raise SystemExit(f"serve: {data_dir / 'service.db'} was written by an older version of the service "
                         f"({e}); start afresh with --fresh (make serve FRESH=1) or remove the directory") from None
    problem = schema_problem(app)
    if problem:
        raise SystemExit(f"serve: {data_dir / 'service.db'} was written by an older version of the service "
                         f"({problem}); start afresh with --fresh (make serve FRESH=1) or remove the directory")
    users = ensure_users(app, data_dir, args.config)
    User = app.state.models.User
    with app.state.sessions() as db:
        mfa = set(db.scalars(select(User.username).where(User.totp_sealed.is_not(None))))
        live = set(db.scalars(select(User.username)))
    gone = {u["username"] for u in users if u["username"] not in live}

    sock = listening_socket(args.port)
    url = f"http://{HOST}:{sock.getsockname()[1]}"
    state = state_line(redis, args.workers, args.server, store) if multi else None
    print(banner(url, data_dir, users, redis, mfa, gone, state), flush=True)
    if args.url_file:
        Path(args.url_file).parent.mkdir(parents=True, exist_ok=True)
        _write_private(Path(args.url_file), url + "\n")
    if multi:
        app.state.engine.dispose()  # this process serves nothing itself
        worker_env(data_dir, args.config, args.store_dir, redis)
        try:
            return serve_workers(sock, args.workers, args.server, not args.no_access_log)
        finally:
            sock.close()
    config = uvicorn.Config(app, workers=1, lifespan="on", access_log=not args.no_access_log,
                            log_level="info", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
