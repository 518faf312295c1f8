"""A mountable Prometheus metrics route for FastAPI (re-exported by ``bitsec.fastapi``).

``app.include_router(metrics_router())`` serves ``GET /metrics``:

- without ``registry``: the runtime's own text (``Runtime.metrics_text``: audit counters,
  bounded tables, per-operation latency histograms) of the application's runtime
  (``app.state.bitsec``, opened by ``bitsec_lifespan``), or of ``runtime`` when given. No
  extra package is needed.
- with ``registry`` (a ``prometheus_client`` ``CollectorRegistry``, for example
  ``prometheus_client.REGISTRY`` where a ``bitsec.prometheus.BitsecCollector`` and the
  application's own metrics are registered): that registry, in the format the scraper asks
  for (Prometheus text, or OpenMetrics when its ``Accept`` header prefers it).

The route is excluded from the OpenAPI schema by default, and is a plain ``def`` endpoint
(it runs in the thread pool: rendering a registry is CPU work). Protect it as the rest of
the deployment requires (a separate port, a network policy, or a dependency in
``dependencies``): the metrics name audit event types and table sizes, not secrets.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import Response

from ..runtime import Runtime

__all__ = ["metrics_router", "PROMETHEUS_TEXT_CONTENT_TYPE"]

#: The content type of the Prometheus text exposition format the library writes.
PROMETHEUS_TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_router(path: str = "/metrics", *, runtime: Runtime | None = None, registry: Any = None,
                   attr: str | None = None, include_in_schema: bool = False,
                   dependencies: Sequence[Depends] | None = None) -> APIRouter:
    """An ``APIRouter`` with one ``GET path`` route serving metrics (see the module docs).

    ``runtime``: serve this runtime's metrics instead of ``app.state.<attr>``'s (``attr``:
    ``bitsec.fastapi.STATE_ATTR``, ``"bitsec"``, when None).
    ``registry``: serve a ``prometheus_client`` registry instead (needs the ``prometheus``
    extra; ``runtime`` and ``attr`` are then unused). ``dependencies``: FastAPI dependencies
    run before the route (authentication, an allow-list of scrapers).
    """
    router = APIRouter(dependencies=list(dependencies or ()))
    if registry is not None:
        try:
            from prometheus_client.exposition import choose_encoder
        except ImportError as e:
            raise ImportError("metrics_router(registry=...) needs the prometheus_client package: "
                              "install it with pip install 'bitsec[prometheus]'") from e

        @router.get(path, include_in_schema=include_in_schema, response_class=Response)
        def registry_metrics(request: Request) -> Response:
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
            return Response(encoder(registry), media_type=content_type)

        return router

    # Imported here: bitsec.fastapi re-exports this module's names at its end.
    from ._common import STATE_ATTR, get_runtime
    state_attr = STATE_ATTR if attr is None else attr

    @router.get(path, include_in_schema=include_in_schema, response_class=Response)
    def bitsec_metrics(request: Request) -> Response:
        rt = runtime if runtime is not None else get_runtime(request, state_attr)
        return Response(rt.metrics_text(), media_type=PROMETHEUS_TEXT_CONTENT_TYPE)

    return router
