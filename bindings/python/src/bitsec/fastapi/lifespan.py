"""``bitsec_lifespan``: the runtime opened with the application and closed with it."""
from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Callable

import anyio
from fastapi import FastAPI

from ..errors import BitsecError
from ..runtime import Runtime
from ._common import STATE_ATTR, log
from .offload import offload_plan

# ---- runtime lifecycle ---------------------------------------------------------------------

def bitsec_lifespan(config: Any, *, attr: str = STATE_ATTR,
                    then: Callable[[FastAPI], Any] | None = None) -> Callable[[FastAPI], Any]:
    """A FastAPI ``lifespan``: opens ``bitsec.Runtime(config)`` at startup (a dict, JSON
    text, a path, or an already open ``Runtime``, which is then not closed by us), keeps it
    on ``app.state.<attr>``, and at shutdown flushes the audit queue and closes it. ``then``
    is an optional inner lifespan of the application, entered once the runtime is open."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = not isinstance(config, Runtime)
        rt = Runtime(config) if owned else config
        setattr(app.state, attr, rt)
        plan = offload_plan(rt)  # decided once, at startup
        log.debug("bitsec calls inline: %s; in the thread pool: %s", ", ".join(plan.inline) or "none",
                  "; ".join(f"{k} ({v})" for k, v in plan.reasons.items()) or "none")
        try:
            if then is not None:
                async with then(app):
                    yield
            else:
                yield
        finally:
            if owned:
                with contextlib.suppress(BitsecError):
                    await anyio.to_thread.run_sync(rt.audit_flush)
                rt.close()
            with contextlib.suppress(AttributeError):
                delattr(app.state, attr)

    return lifespan
