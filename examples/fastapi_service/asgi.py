"""The reference service as an application factory for servers that start worker processes
themselves (uvicorn ``--workers``, gunicorn): they import it by name and call it in each
worker (uvicorn) or once before forking them (gunicorn ``--preload``), so its settings
come from the environment:

    BITSEC_REFSVC_DATA_DIR=/srv/refsvc \\
      uvicorn --workers 4 --factory examples.fastapi_service.asgi:app_from_env
    BITSEC_REFSVC_DATA_DIR=/srv/refsvc \\
      gunicorn -k uvicorn_worker.UvicornWorker -w 4 --preload 'examples.fastapi_service.asgi:app_from_env()'

- ``BITSEC_REFSVC_DATA_DIR`` (required): the data directory (``service.db``, the audit log,
  the key files); ``serve.py`` prepares it and creates the demo users;
- ``BITSEC_REFSVC_CONFIG``: the bitsec configuration (default: this directory's config.json);
- ``BITSEC_REFSVC_STORE_DIR``: where the ``host`` store's region file lives (default
  ``/dev/shm``; store.py);
- ``BITSEC_REFSVC_REDIS_HOST`` / ``BITSEC_REFSVC_REDIS_PORT`` / ``BITSEC_REFSVC_REDIS_KEY_PREFIX``:
  keep the state in that redis-server instead (every host's workers share it).

The bitsec runtime is opened by the application's lifespan, which runs in each worker after
the fork: every worker has a runtime of its own, and the stores named by the configuration
(``host`` region, Redis) are what they share.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from .app import create_app
from .store import store_section

HERE = Path(__file__).resolve().parent

DATA_DIR_ENV = "BITSEC_REFSVC_DATA_DIR"
CONFIG_ENV = "BITSEC_REFSVC_CONFIG"
STORE_DIR_ENV = "BITSEC_REFSVC_STORE_DIR"
REDIS_HOST_ENV = "BITSEC_REFSVC_REDIS_HOST"
REDIS_PORT_ENV = "BITSEC_REFSVC_REDIS_PORT"
REDIS_PREFIX_ENV = "BITSEC_REFSVC_REDIS_KEY_PREFIX"


def redis_from_env() -> dict[str, Any] | None:
    """The ``redis`` section the environment names, or None."""
    port = os.environ.get(REDIS_PORT_ENV)
    if not port:
        return None
    redis: dict[str, Any] = {"host": os.environ.get(REDIS_HOST_ENV, "127.0.0.1"), "port": int(port)}
    if os.environ.get(REDIS_PREFIX_ENV):
        redis["key_prefix"] = os.environ[REDIS_PREFIX_ENV]
    return redis


def app_from_env() -> FastAPI:
    """The service of the data directory ``BITSEC_REFSVC_DATA_DIR`` (see the module's doc)."""
    data = os.environ.get(DATA_DIR_ENV)
    if not data:
        raise RuntimeError(f"{DATA_DIR_ENV} must name the service's data directory (serve.py prepares it)")
    data_dir = Path(data).resolve()
    config = os.environ.get(CONFIG_ENV) or str(HERE / "config.json")
    redis = redis_from_env()
    store = None if redis else store_section(data_dir, os.environ.get(STORE_DIR_ENV) or None)
    # Every record is on disk before its response starts (the guard emits it when the
    # response starts): a worker killed at any moment loses no record of an answered request.
    # One process's batched queue would be lost with it.
    app = create_app(config, f"sqlite:///{data_dir / 'service.db'}", data_dir=data_dir, redis=redis, store=store,
                     audit_durability="every_event")
    # gunicorn --preload forks the workers from this process: no pooled SQLite connection may
    # cross the fork (each worker opens its own on first use).
    app.state.engine.dispose()
    return app
