"""Exceptions: one root, ``BitsecError``, and a subclass per status code of the C ABI.

Each subclass also inherits the builtin exception a Python user would expect
(``ValueError`` for bad input, ``ConnectionError`` for an unavailable backend, ...), as
PyNaCl does. Messages come from the library and never contain secrets.
"""
from __future__ import annotations


class BitsecError(Exception):
    """Root of every bitsec exception. ``code`` is the C status code, ``detail`` its message."""

    code: int = -1

    def __init__(self, detail: str = "", code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.detail = detail
        super().__init__(detail or self.__class__.__name__)


class InvalidArgumentError(BitsecError, ValueError):
    code = 1


class ConfigError(BitsecError, ValueError):
    code = 2


class NotConfiguredError(BitsecError):
    code = 3


class BufferTooSmallError(BitsecError):
    code = 4


class BackendUnavailableError(BitsecError, ConnectionError):
    code = 5


class CryptoError(BitsecError):
    code = 6


class ClosedError(BitsecError, ValueError):
    code = 7


class TooLargeError(BitsecError, ValueError):
    code = 8


class MalformedError(BitsecError, ValueError):
    code = 9


class BitsecIOError(BitsecError, OSError):
    code = 10


class BitsecTimeoutError(BitsecError, TimeoutError):
    code = 11


class InternalError(BitsecError):
    code = 12


class UnsupportedError(BitsecError):
    code = 13


class NotFoundError(BitsecError, LookupError):
    code = 14


#: Status code -> exception class; status names as in include/bitsec.h.
BY_CODE: dict[int, type[BitsecError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError, ConfigError, NotConfiguredError, BufferTooSmallError,
        BackendUnavailableError, CryptoError, ClosedError, TooLargeError, MalformedError,
        BitsecIOError, BitsecTimeoutError, InternalError, UnsupportedError, NotFoundError,
    )
}

#: The header's macro name of each code (checked against include/bitsec.h by a test).
HEADER_NAMES: dict[int, str] = {
    0: "BITSEC_OK", 1: "BITSEC_E_INVALID_ARGUMENT", 2: "BITSEC_E_CONFIG", 3: "BITSEC_E_NOT_CONFIGURED",
    4: "BITSEC_E_BUFFER_TOO_SMALL", 5: "BITSEC_E_BACKEND_UNAVAILABLE", 6: "BITSEC_E_CRYPTO",
    7: "BITSEC_E_CLOSED", 8: "BITSEC_E_TOO_LARGE", 9: "BITSEC_E_MALFORMED", 10: "BITSEC_E_IO",
    11: "BITSEC_E_TIMEOUT", 12: "BITSEC_E_INTERNAL", 13: "BITSEC_E_UNSUPPORTED", 14: "BITSEC_E_NOT_FOUND",
}


def error_for(code: int, detail: str) -> BitsecError:
    cls = BY_CODE.get(code)
    if cls is None:
        return BitsecError(detail or f"unknown status {code}", code=code)
    return cls(detail)
