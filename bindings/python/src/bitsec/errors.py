"""Exceptions: one root, ``BitsecError``, and a subclass per status code of the C ABI.

Each subclass also inherits the builtin exception a Python user would expect
(``ValueError`` for bad input, ``ConnectionError`` for an unavailable backend, ...), as
PyNaCl does. Messages come from the library and never contain secrets.
"""
from __future__ import annotations

from . import _abi


class BitsecError(Exception):
    """Root of every bitsec exception. ``code`` is the C status code, ``detail`` its message."""

    code: int = -1

    def __init__(self, detail: str = "", code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.detail = detail
        super().__init__(detail or self.__class__.__name__)


class InvalidArgumentError(BitsecError, ValueError):
    code = _abi.BITSEC_E_INVALID_ARGUMENT


class ConfigError(BitsecError, ValueError):
    code = _abi.BITSEC_E_CONFIG


class NotConfiguredError(BitsecError):
    code = _abi.BITSEC_E_NOT_CONFIGURED


class BufferTooSmallError(BitsecError):
    code = _abi.BITSEC_E_BUFFER_TOO_SMALL


class BackendUnavailableError(BitsecError, ConnectionError):
    code = _abi.BITSEC_E_BACKEND_UNAVAILABLE


class CryptoError(BitsecError):
    code = _abi.BITSEC_E_CRYPTO


class ClosedError(BitsecError, ValueError):
    code = _abi.BITSEC_E_CLOSED


class TooLargeError(BitsecError, ValueError):
    code = _abi.BITSEC_E_TOO_LARGE


class MalformedError(BitsecError, ValueError):
    code = _abi.BITSEC_E_MALFORMED


class BitsecIOError(BitsecError, OSError):
    code = _abi.BITSEC_E_IO


class BitsecTimeoutError(BitsecError, TimeoutError):
    code = _abi.BITSEC_E_TIMEOUT


class InternalError(BitsecError):
    code = _abi.BITSEC_E_INTERNAL


class UnsupportedError(BitsecError):
    code = _abi.BITSEC_E_UNSUPPORTED


class NotFoundError(BitsecError, LookupError):
    code = _abi.BITSEC_E_NOT_FOUND


#: Status code -> exception class; status names as in include/bitsec.h.
BY_CODE: dict[int, type[BitsecError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError, ConfigError, NotConfiguredError, BufferTooSmallError,
        BackendUnavailableError, CryptoError, ClosedError, TooLargeError, MalformedError,
        BitsecIOError, BitsecTimeoutError, InternalError, UnsupportedError, NotFoundError,
    )
}

#: The header's macro name of each code (from the generated _abi; a test checks include/bitsec.h).
HEADER_NAMES: dict[int, str] = {
    value: name for name, value in vars(_abi).items()
    if isinstance(value, int) and (name == "BITSEC_OK" or name.startswith("BITSEC_E_"))
}


def error_for(code: int, detail: str) -> BitsecError:
    cls = BY_CODE.get(code)
    if cls is None:
        return BitsecError(detail or f"unknown status {code}", code=code)
    return cls(detail)
