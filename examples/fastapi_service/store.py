"""Where the service's state lives when it runs as several worker processes on one host.

Rate-limit buckets, the login guard's and brute force's failure windows, revocations and
TOTP replay steps must be shared by every worker, or each worker keeps its own: with N
workers a client would get N times its limit, N times the login guard's threshold, and a
token revoked through one worker would stay valid on the others. Three stores exist
(docs/configuration.md, ``store``):

- ``process``: tables in the process; right for one worker only;
- ``host``: a memory-mapped region shared by every process on the host that opens the same
  region name (the file ``<directory>/bitsec-<name>.region``); right for several workers
  on one host;
- ``redis``: every worker of every host (``serve.py --redis-port``).

``store_section`` gives the ``store`` section of a multi-worker service without Redis: the
``host`` store, its region named after the data directory (so that two services on one
host never share a region, and a restarted service finds its own), its file in
``directory`` (default ``/dev/shm``, memory-backed).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

#: Whether a multi-worker service without Redis puts its state in the ``host`` store. When
#: False, each worker keeps its state in process (the library's default without Redis):
#: limits then hold per worker, not per service.
HOST_STORE = True

#: Where the region file lives unless told otherwise: memory-backed on Linux.
DEFAULT_DIRECTORY = "/dev/shm"


def region_name(data_dir: str | os.PathLike[str]) -> str:
    """The region name of the service whose data directory is ``data_dir``: ``refsvc-``
    and 24 hex digits of the SHA-256 of its absolute path (the name allows 1-64 bytes of
    ``A-Za-z0-9_-.``; a path does not fit that, its digest does)."""
    path = str(Path(data_dir).resolve())
    return "refsvc-" + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def region_file(data_dir: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None) -> Path:
    """The file of that region: ``<directory>/bitsec-<name>.region``."""
    return Path(directory or DEFAULT_DIRECTORY) / f"bitsec-{region_name(data_dir)}.region"


def store_section(data_dir: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None, *,
                  enabled: bool | None = None) -> dict[str, Any] | None:
    """The ``store`` section of a multi-worker service without Redis (the ``host`` store),
    or None while ``HOST_STORE`` (or ``enabled``) is off: the configuration then has no
    ``store`` section and each worker keeps its state in process."""
    if not (HOST_STORE if enabled is None else enabled):
        return None
    return {"default": "host",
            "host": {"name": region_name(data_dir), "directory": str(directory or DEFAULT_DIRECTORY)}}
