"""The optional compiled steps of bitsec.fastapi's guard (``bitsec._speedups``, a CPython
extension built from ``_speedups.c`` against the limited API).

Everything works without it: the package's own Python does each step the same way (and
``tests/test_speedups.py`` compares the two). With it, a protected endpoint costs a few
microseconds less per request (BENCHMARKS.md, HTTP). ``BITSEC_SPEEDUPS=0`` in the
environment (read at import) turns it off; a source install without a C compiler simply
goes without it. ``SPEEDUPS`` is the loaded module, or None."""
from __future__ import annotations

import ctypes
import os
from types import ModuleType
from typing import Any

from . import _abi

__all__ = ["SPEEDUPS", "active"]


def _load() -> ModuleType | None:
    if os.environ.get("BITSEC_SPEEDUPS", "1").strip() == "0":
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    # Built from a C file that repeats the request struct of include/bitsec.h: never used
    # against a library whose struct differs.
    if getattr(_speedups, "REQUEST_BYTES", None) != _abi.BITSEC_GUARD_REQUEST_BYTES:
        return None
    module: ModuleType = _speedups
    return module


def bind(fn: Any) -> Any:
    """``guard_request`` bound to ``fn`` (the ctypes function of bitsec_guard_check_request),
    or None without the module."""
    if SPEEDUPS is None:
        return None
    SPEEDUPS.bind_guard(ctypes.cast(fn, ctypes.c_void_p).value)
    return SPEEDUPS.guard_request


def active() -> bool:
    """Whether the compiled steps are in use in this process."""
    return SPEEDUPS is not None


SPEEDUPS = _load()
