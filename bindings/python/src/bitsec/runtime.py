"""``bitsec.Runtime``: one runtime built from one configuration document."""
from __future__ import annotations

import ctypes
import json
import os
import weakref
from typing import Any, Mapping, Union, cast

from . import _native as N
from .audit import AuditMixin
from .csrf import CSRFMixin
from .errors import ClosedError, InvalidArgumentError
from .fields import FieldsMixin
from .guardcheck import GuardCheckMixin
from .permissions import PermissionsMixin
from .ratelimit import RateLimitMixin
from .tokens import TokensMixin
from .totp import TOTPMixin
from .sessions import SessionsMixin
from .passwords import PasswordsMixin

ConfigSource = Union[Mapping[str, Any], str, bytes, "os.PathLike[str]"]


def _close_handle(h: int) -> None:
    N.runtime_close(h)


class Runtime(TokensMixin, PermissionsMixin, RateLimitMixin, TOTPMixin, FieldsMixin, AuditMixin, SessionsMixin, CSRFMixin, PasswordsMixin,
              GuardCheckMixin):
    """A bitsec runtime: safe to share between threads (calls release the GIL).

    ``config`` is a dict, a JSON document (``str`` starting with ``{``, or ``bytes``), or
    the path of a JSON file (``str`` or ``os.PathLike``). Use it as a context manager or
    call ``close()``; a finalizer closes it if you forget.
    """

    def __init__(self, config: ConfigSource) -> None:
        h = ctypes.c_void_p()
        if isinstance(config, Mapping):
            data = json.dumps(config).encode("utf-8")
            N.check(N.runtime_open(data, len(data), ctypes.byref(h)))
        elif isinstance(config, bytes):
            N.check(N.runtime_open(config, len(config), ctypes.byref(h)))
        elif isinstance(config, str) and config.lstrip().startswith("{"):
            data = config.encode("utf-8")
            N.check(N.runtime_open(data, len(data), ctypes.byref(h)))
        elif isinstance(config, (str, os.PathLike)):
            path = os.fsencode(config)
            if b"\0" in path:
                raise InvalidArgumentError("configuration path contains a NUL byte")
            N.check(N.runtime_open_file(path, ctypes.byref(h)))
        else:
            raise TypeError(f"config must be a mapping, JSON text or a path, not {type(config).__name__}")
        if not h.value:
            raise RuntimeError("bitsec_runtime_open returned no handle")
        self._h: int | None = h.value
        self._finalizer = weakref.finalize(self, _close_handle, h.value)

    @property
    def handle(self) -> int:
        """The C handle; raises ``ClosedError`` after ``close()``."""
        h = self._h
        if h is None:
            raise ClosedError("runtime is closed")
        return h

    @property
    def closed(self) -> bool:
        return self._h is None

    def close(self) -> None:
        """Closes the runtime (idempotent). Calls in flight on other threads finish first."""
        if self._h is not None:
            try:
                self._audit_run_soon(wait=True)  # the request records waiting for the loop's turn
            finally:
                self._h = None
                self._finalizer()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """What is configured (no secrets)."""
        return cast("dict[str, Any]", json.loads(N.call_with_output(N.runtime_describe, self.handle)))

    def redis_ping(self) -> int:
        """PING through the runtime's Redis pool; returns the round trip in microseconds."""
        rtt = ctypes.c_int64(0)
        N.check(N.redis_ping(self.handle, ctypes.byref(rtt)))
        return rtt.value

    def __repr__(self) -> str:
        return f"<bitsec.Runtime {'closed' if self._h is None else hex(self._h)}>"


def random_bytes(n: int) -> bytes:
    """``n`` cryptographically secure random bytes from OpenSSL."""
    if n < 0:
        raise InvalidArgumentError("n must be >= 0")
    buf = ctypes.create_string_buffer(max(n, 1))
    N.check(N.random_bytes(buf, n))
    return buf.raw[:n]
