"""bitsec's metrics in a ``prometheus_client`` registry.

``BitsecCollector(runtime)`` is a custom collector: at every scrape it reads the runtime's
Prometheus text (``Runtime.metrics_text``: the audit counters, the bounded tables' gauges and
counters, and the per-operation latency histograms measured inside the library) and yields
it as ``prometheus_client`` metric families, next to the application's own metrics::

    from prometheus_client import REGISTRY
    from bitsec.prometheus import BitsecCollector

    rt = bitsec.Runtime(config)
    REGISTRY.register(BitsecCollector(rt))

Metric names are the library's (``bitsec_operation_duration_seconds``, ``bitsec_table_*``,
``<type>_events_total``, ...), unchanged, so alert rules written against
``bitsec_metrics_text`` select the same series.

Needs the ``prometheus`` extra (``pip install 'bitsec[prometheus]'``, which installs
``prometheus_client``). The FastAPI route is ``bitsec.fastapi.metrics_router``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Union

try:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import Collector
except ImportError as e:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "bitsec.prometheus needs the prometheus_client package: "
        "install it with pip install 'bitsec[prometheus]' (or pip install prometheus-client)"
    ) from e

from .errors import ClosedError
from .runtime import Runtime

__all__ = ["BitsecCollector"]

RuntimeSource = Union[Runtime, Callable[[], Union[Runtime, None]]]


class BitsecCollector(Collector):
    """A ``prometheus_client`` collector of one bitsec runtime's metrics.

    ``runtime`` is an open ``Runtime``, or a callable returning one (or None while there is
    none, for example before an application's startup): it is called at every scrape. A
    scrape of a closed runtime, or of none, yields nothing rather than failing the whole
    scrape. Registering two collectors of runtimes with the same metrics in one registry is
    refused by ``prometheus_client`` (duplicated timeseries), as it should be.

    Metrics are those of this process: with several worker processes each has its own
    latency histograms and in-process tables (the audit counters of a shared trail and the
    tables of the ``host`` store are host-wide; see the deployment guide).
    """

    def __init__(self, runtime: RuntimeSource) -> None:
        self._source = runtime

    def _runtime(self) -> Runtime | None:
        src = self._source
        if isinstance(src, Runtime):
            return src
        return src()

    def describe(self) -> list[Metric]:
        """The families of the runtime at registration (so that a registry refuses a second
        collector of the same metrics, also without ``auto_describe``)."""
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        rt = self._runtime()
        if rt is None:
            return
        try:
            text = rt.metrics_text()
        except ClosedError:
            return
        yield from text_string_to_metric_families(text)
