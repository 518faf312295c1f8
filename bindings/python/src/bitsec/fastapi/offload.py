"""Where native calls run: inline on the event loop when they cannot wait, in the thread pool
when they can (a Redis round trip, an fsync, a full audit queue under the ``block`` policy).
``offload_plan(rt)`` decides once per runtime, from its configuration."""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import anyio

from ..runtime import Runtime

# ---- where native calls run -----------------------------------------------------------------

#: ``offload=`` values: ``"auto"`` (the default) runs inline what cannot wait and sends to the
#: thread pool what can; ``"always"`` sends every native call to the thread pool.
OFFLOAD_MODES = ("auto", "always")

#: The operations an ``OffloadPlan`` decides.
OPERATIONS = ("tokens", "permissions", "rate_limits", "brute_force", "audit", "totp")

#: Token algorithms whose uncached verify costs more CPU than a trip through the thread pool
#: (~70 us idle, 70-115 us of CPU under load): a runtime with a key of one of them verifies in
#: the thread pool. Measured per algorithm in BENCHMARKS.md ("HTTP (issue 9)", "Which calls
#: run on the event loop"); HS*, RS*/PS* (2048-4096 bit), ES256 and EdDSA stay below it.
SLOW_VERIFY_ALGS = frozenset({"ES384", "ES512"})

_T = TypeVar("_T")


def _check_offload(offload: str) -> str:
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}")
    return offload


@dataclass(frozen=True)
class OffloadPlan:
    """Which of a runtime's operations go through the thread pool: ``reasons`` maps each
    such operation (``OPERATIONS``) to why it may wait; every other operation runs inline,
    on the event loop. ``offloads("rate_limits")`` asks for one."""

    reasons: Mapping[str, str]

    def offloads(self, operation: str) -> bool:
        return operation in self.reasons

    @property
    def inline(self) -> tuple[str, ...]:
        return tuple(op for op in OPERATIONS if op not in self.reasons)

    @classmethod
    def always(cls) -> "OffloadPlan":
        return cls({op: "offload='always'" for op in OPERATIONS})

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> "OffloadPlan":
        """The plan for a runtime whose ``rt.describe()`` is ``description``. A value this
        module does not know (a new backend) counts as one that may wait."""
        sections = description.get("sections") or {}
        why: dict[str, str] = {}
        tokens = sections.get("tokens")
        if tokens:
            revocation = tokens.get("revocation")
            slow = sorted({str(k.get("alg")) for k in tokens.get("keys") or () if k.get("alg") in SLOW_VERIFY_ALGS})
            if revocation not in _MEMORY_STORES:
                why["tokens"] = f"revocation in {revocation}"
            elif slow:
                why["tokens"] = "verify slower than a thread hop: " + ", ".join(slow)
        limits = sections.get("rate_limits")
        if limits and limits.get("store") not in _MEMORY_STORES:
            why["rate_limits"] = why["brute_force"] = f"store {limits.get('store')}"
        audit = sections.get("audit")
        if audit:
            if audit.get("durability") not in ("none", "batched"):
                why["audit"] = f"durability {audit.get('durability')}"
            elif audit.get("full_policy") != "drop":
                why["audit"] = f"full_policy {audit.get('full_policy')}"
        totp = sections.get("totp")
        if totp and totp.get("store", totp.get("state")) not in _MEMORY_STORES:
            why["totp"] = f"state in {totp.get('store', totp.get('state'))}"
        return cls(why)


#: Stores whose operations never wait on the network: tables in this process (``process``)
#: or in the host's shared memory (``host``); ``memory`` and ``local`` are what older
#: versions of the library reported for ``process``.
_MEMORY_STORES = frozenset({"process", "host", "memory", "local"})

_PLANS: "weakref.WeakKeyDictionary[Runtime, OffloadPlan]" = weakref.WeakKeyDictionary()


def offload_plan(rt: Runtime, offload: str = "auto") -> OffloadPlan:
    """The runtime's ``OffloadPlan``, decided once from ``rt.describe()`` and cached per
    runtime (``offload="always"``: everything in the thread pool). A runtime that cannot
    describe itself (closed, or a stand-in without ``describe``) gets the safe plan:
    everything in the thread pool."""
    if _check_offload(offload) == "always":
        return _ALWAYS
    plan = _PLANS.get(rt)
    if plan is None:
        try:
            plan = OffloadPlan.from_description(rt.describe())
        except Exception:  # noqa: BLE001 - whatever it is, the safe plan
            return _ALWAYS
        _PLANS[rt] = plan
    return plan


_ALWAYS = OffloadPlan.always()


async def run_native(rt: Runtime, operation: str, fn: Callable[..., _T], *args: Any,
                     offload: str = "auto", **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` inline when ``offload_plan(rt, offload)`` says ``operation``
    cannot wait, else in the thread pool. For your own ``async def`` endpoints:
    ``d = await run_native(rt, "rate_limits", rt.rate_limit_take, key, "auth")``."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}")
    if offload_plan(rt, offload).offloads(operation):
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    return fn(*args, **kwargs)
