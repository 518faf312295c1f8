"""File modes of the data directory: it holds password hashes, sealed TOTP secrets, session
records (``service.db``), the audit trail and the key files, so only the service's own user
may read it.

At start, ``secure_data_dir``:

- creates the directory with mode 0700, or tightens an existing one to 0700;
- tightens every regular file directly in it (the database and its ``-wal`` / ``-journal`` /
  ``-shm`` files, audit files, key files, ...) to 0600 when group or others have any access;
- creates the SQLite database file empty with mode 0600 before SQLite opens it (SQLite gives
  its ``-wal``, ``-journal`` and ``-shm`` files the mode of the database file).

A looser mode is fixed and logged as a warning (the service can fix it, and an operator
should know a secret was readable); a directory or file owned by another user, or a
symbolic link in the place of the directory, is refused with ``DataDirError``: the service
cannot make those private.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("examples.fastapi_service")

DIR_MODE = 0o700
FILE_MODE = 0o600


class DataDirError(RuntimeError):
    """The data directory cannot be made private (owner, symbolic link)."""


def _own(path: Path, st: os.stat_result) -> None:
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise DataDirError(f"{path} belongs to uid {st.st_uid}, not to the service's user (uid {os.getuid()}): "
                           "give the service a data directory of its own")


def _tighten(path: Path, st: os.stat_result, mode: int) -> None:
    current = stat.S_IMODE(st.st_mode)
    if current & 0o077:
        _own(path, st)
        os.chmod(path, current & mode)
        log.warning("%s had mode %04o, readable by others than the service's user: now %04o", path, current,
                    current & mode)


def secure_file(path: Path) -> None:
    """Tightens one existing regular file to 0600 (fix and log), refuses a foreign one."""
    st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        _own(path, st)
        _tighten(path, st, FILE_MODE)


def secure_data_dir(data_dir: Path, sqlite_file: Path | None = None) -> None:
    """Creates or checks ``data_dir`` (0700) and the files in it (0600); creates
    ``sqlite_file`` (0600, empty) if it does not exist yet, and checks it and its journal
    files also when they live elsewhere."""
    if data_dir.is_symlink():
        raise DataDirError(f"{data_dir} is a symbolic link: give the real directory")
    if not data_dir.exists():
        data_dir.mkdir(mode=DIR_MODE, parents=True)
    st = data_dir.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise DataDirError(f"{data_dir} is not a directory")
    _own(data_dir, st)
    _tighten(data_dir, st, DIR_MODE)
    for p in data_dir.iterdir():
        secure_file(p)
    if sqlite_file is not None:
        if not sqlite_file.exists():
            sqlite_file.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.close(os.open(sqlite_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        for p in (sqlite_file, *(sqlite_file.with_name(sqlite_file.name + s) for s in ("-wal", "-journal", "-shm"))):
            if p.exists():
                secure_file(p)
