"""Loading libbitsec and declaring its C functions.

The library is the one at the path in ``BITSEC_LIBRARY`` when that variable is set: a
library there that cannot be loaded (missing, not a shared library, not bitsec, another ABI
version) is an ImportError that says why, never a silent fall back to another copy.
Without the variable: the copy bundled in this package (``bitsec/_lib/``), then the
system's search path (``libbitsec.so.1``). The ImportError lists every path tried and why
it failed. A library whose ABI version differs from ``ABI_VERSION`` is refused.

The ctypes prototypes (restype, argtypes) of every C function are generated from
include/bitsec_api.h into ``_abi.PROTOTYPES`` (tools/gen_abi.py, ``make header``); ``declare``
binds a function with its generated prototype, exactly once, and the capability modules bind
their own. ``tests/test_prototypes.py`` checks every declaration against the header.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import c_int32, c_size_t, c_void_p
from typing import Any, Callable

from . import _abi
from .errors import error_for

#: The ABI this package was written for (BITSEC_ABI_VERSION).
ABI_VERSION: int = _abi.BITSEC_ABI_VERSION

_lock = threading.Lock()


def _candidates() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    env = os.environ.get("BITSEC_LIBRARY")
    if env:
        # An explicit choice is the only candidate: falling back would hide a broken path
        # and run another build than the one asked for.
        return [("BITSEC_LIBRARY", env)]
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib")
    for name in ("libbitsec.so.1", "libbitsec.so"):
        out.append(("bundled", os.path.join(here, name)))
    found = ctypes.util.find_library("bitsec")
    out.append(("system", found or "libbitsec.so.1"))
    return out


def load_library(candidates: list[tuple[str, str]] | None = None) -> ctypes.CDLL:
    """Loads the first library that opens and has the right ABI; ImportError otherwise."""
    tried: list[str] = []
    for origin, path in candidates if candidates is not None else _candidates():
        if origin == "bundled" and not os.path.exists(path):
            tried.append(f"{path} ({origin}): not present")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({origin}): {e}")
            continue
        try:
            fn = lib.bitsec_abi_version
        except AttributeError:
            tried.append(f"{path} ({origin}): not a bitsec library (no bitsec_abi_version)")
            continue
        fn.restype, fn.argtypes = _abi.PROTOTYPES["bitsec_abi_version"]
        abi = fn()
        if abi != ABI_VERSION:
            tried.append(f"{path} ({origin}): ABI version {abi}, this package needs {ABI_VERSION}")
            continue
        return lib
    if candidates is None and os.environ.get("BITSEC_LIBRARY"):
        raise ImportError(f"cannot load libbitsec from BITSEC_LIBRARY={os.environ['BITSEC_LIBRARY']}: "
                          + tried[0].split(" (BITSEC_LIBRARY): ", 1)[-1]
                          + "\nFix the path, or unset BITSEC_LIBRARY to use the library bundled in the package.")
    raise ImportError("cannot load libbitsec; tried:\n  " + "\n  ".join(tried)
                      + "\nSet BITSEC_LIBRARY to the path of libbitsec.so.1, or build it: make build"
                      + " (in a source checkout), then reinstall the package.")


with _lock:
    lib = load_library()

#: name -> (restype, argtypes), every prototype this package declares.
PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {}


def declare(name: str) -> Callable[..., Any]:
    """Binds a C function once, with its prototype generated from the header, and returns it."""
    if name in PROTOTYPES:
        raise RuntimeError(f"{name} is declared twice")
    restype, argtypes = _abi.PROTOTYPES[name]
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = argtypes
    PROTOTYPES[name] = (restype, list(argtypes))
    bound: Callable[..., Any] = fn
    return bound


def unconverted(fn: Any) -> Any:
    """The same C function as ``fn`` (declared with ``declare``) without ctypes' per-argument
    conversion, for hot paths only. ctypes calls each argtype's ``from_param`` and allocates a
    converted object per argument on every call, which costs more than many bitsec
    operations. A caller of the returned function must pass only objects whose C type is
    already exactly the declared one (prebuilt ``c_void_p``/``c_size_t``/... instances,
    ``bytes`` for ``char const *``, ``byref`` of the declared pointee): the declared
    prototype, checked against the header by tests/test_prototypes.py, still describes the
    call, and each capability's tests check what its fast path passes."""
    if fn.__name__ not in PROTOTYPES:
        raise RuntimeError(f"{fn.__name__} must be declared before it gets a fast path")
    raw = type(fn)((fn.__name__, lib))
    raw.restype = fn.restype
    return raw


# ---- the foundation's functions --------------------------------------------------------
status = c_int32
handle = c_void_p

version_string = declare("bitsec_version_string")
version_number = declare("bitsec_version_number")
abi_version = declare("bitsec_abi_version")
strerror = declare("bitsec_strerror")
last_error = declare("bitsec_last_error")
free = declare("bitsec_free")
runtime_open = declare("bitsec_runtime_open")
runtime_open_file = declare("bitsec_runtime_open_file")
runtime_close = declare("bitsec_runtime_close")
runtime_describe = declare("bitsec_runtime_describe")
runtime_describe_alloc = declare("bitsec_runtime_describe_alloc")
random_bytes = declare("bitsec_random_bytes")
redis_ping = declare("bitsec_redis_ping")


def names_by_value(prefix: str, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The lower-case names of the _abi constants ``<prefix><NAME>``, indexed by their value
    (values must run 0, 1, 2, ...), leaving out names whose rest starts with one of
    ``exclude``: the reason tables of the capability modules."""
    found = {v: k[len(prefix):].lower() for k, v in vars(_abi).items()
             if k.startswith(prefix) and isinstance(v, int) and not k[len(prefix):].startswith(exclude)}
    if sorted(found) != list(range(len(found))):
        raise RuntimeError(f"{prefix}* values are not 0..{len(found) - 1}")
    return tuple(found[i] for i in range(len(found)))


def check(rc: int) -> None:
    """Raises the exception of a non-OK status, with this thread's detail message."""
    if rc != 0:
        raise error_for(rc, (last_error() or b"").decode("utf-8", "replace"))


def call_with_output(fn: Callable[..., int], *args: Any, initial: int = 1024) -> bytes:
    """Calls a function of the (out_buf, out_cap, *out_len) convention, growing the buffer
    once if the library reports that it needs more."""
    cap = initial
    for _ in range(3):
        buf = ctypes.create_string_buffer(cap)
        n = c_size_t(0)
        rc = fn(*args, buf, cap, ctypes.byref(n))
        if rc == _abi.BITSEC_E_BUFFER_TOO_SMALL and n.value > cap:
            cap = n.value + 1
            continue
        check(rc)
        return buf.raw[: n.value]
    raise RuntimeError("output size kept changing")
