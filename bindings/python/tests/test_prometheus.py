"""bitsec.prometheus (a prometheus_client collector) and bitsec.fastapi.metrics_router: the
collector's output goes through prometheus_client's own exposition and parser; the route
answers the text format (and OpenMetrics when asked, for a registry); the latency
histograms count the calls made; the import guard names the extra to install."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.parser import text_string_to_metric_families

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import bitsec
from bitsec.fastapi import PROMETHEUS_TEXT_CONTENT_TYPE, bitsec_lifespan, metrics_router
from bitsec.prometheus import BitsecCollector

PID = str(os.getpid())
PRINCIPAL = bitsec.Principal("u1", roles=["reader"])


def config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "allow_inline_secrets": True,
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}]},
        "permissions": {"policy": {"resources": ["docs"], "actions": ["read"],
                                   "roles": {"reader": {"allow": ["docs:read"]}}}},
        "rate_limits": {"categories": {"api": {"capacity": 5, "period_seconds": 60}}},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.log")}]},
        "metrics": {"histograms": "on"},
        **extra,
    }


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_collector_yields_counters_gauges_and_histograms_prometheus_client_renders(tmp_path: Path) -> None:
    with bitsec.Runtime(config(tmp_path)) as rt:
        for _ in range(7):
            assert rt.check_permission(PRINCIPAL, "docs", "read").allowed
        for _ in range(6):
            rt.rate_limit_take("u1", category="api")
        registry = CollectorRegistry()
        registry.register(BitsecCollector(rt))
        text = generate_latest(registry).decode()
        fams = families(text)
        # Histograms with prometheus_client's own sample names, per operation and pid.
        assert fams["bitsec_operation_duration_seconds"].type == "histogram"
        labels = {"operation": "permission_check", "pid": PID}
        assert registry.get_sample_value("bitsec_operation_duration_seconds_count", labels) == 7
        assert registry.get_sample_value("bitsec_operation_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 7
        assert registry.get_sample_value("bitsec_operation_duration_seconds_sum", labels) > 0
        assert registry.get_sample_value("bitsec_operation_duration_seconds_count",
                                         {"operation": "rate_limit_take", "pid": PID}) == 6
        # Buckets are cumulative and ordered.
        buckets = [s for s in fams["bitsec_operation_duration_seconds"].samples
                   if s.name.endswith("_bucket") and s.labels["operation"] == "permission_check"]
        assert [b.labels["le"] for b in buckets][-1] == "+Inf"
        counts = [b.value for b in buckets]
        assert counts == sorted(counts)
        # Counters and gauges keep the library's names (the alert rules' selectors).
        assert fams["bitsec_table_entries"].type == "gauge"
        assert fams["bitsec_table_full_refusals"].type == "counter"
        assert "bitsec_table_full_refusals_total{" in text
        assert "bitsec_audit_events_dropped_total " in text
        # The denied take (the sixth of a bucket of five) is an authorization event counter.
        assert fams["bitsec_audit_records_written"].type == "counter"


def test_collector_is_registered_once_and_survives_a_closed_or_absent_runtime(tmp_path: Path) -> None:
    rt = bitsec.Runtime(config(tmp_path))
    registry = CollectorRegistry()
    registry.register(BitsecCollector(rt))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(BitsecCollector(rt))
    rt.close()
    # A scrape during shutdown yields nothing from bitsec instead of failing.
    assert "bitsec_" not in generate_latest(registry).decode()
    holder: dict[str, bitsec.Runtime] = {}
    late = CollectorRegistry()
    late.register(BitsecCollector(lambda: holder.get("rt")))
    assert generate_latest(late) == b""
    (tmp_path / "later").mkdir()
    with bitsec.Runtime(config(tmp_path / "later")) as rt2:
        holder["rt"] = rt2
        assert "bitsec_operation_duration_seconds_bucket" in generate_latest(late).decode()


def test_histograms_off_leaves_only_the_other_metrics(tmp_path: Path) -> None:
    with bitsec.Runtime(config(tmp_path, metrics={"histograms": "off"})) as rt:
        rt.check_permission(PRINCIPAL, "docs", "read")
        fams = families(rt.metrics_text())
        assert "bitsec_operation_duration_seconds" not in fams
        assert "bitsec_table_entries" in fams
        assert rt.describe()["sections"]["metrics"] == {"histograms": "off", "sample_every": 16}
    with pytest.raises(bitsec.ConfigError, match="metrics.sample_every"):
        bitsec.Runtime(config(tmp_path, metrics={"histograms": "sampled", "sample_every": 10}))


def test_redis_round_trips_are_timed(tmp_path: Path, redis_config: dict) -> None:
    with bitsec.Runtime({**config(tmp_path), **redis_config, "store": {"default": "redis"}}) as rt:
        for _ in range(3):
            rt.rate_limit_take("u1", category="api")
        registry = CollectorRegistry()
        registry.register(BitsecCollector(rt))
        assert registry.get_sample_value("bitsec_redis_roundtrip_seconds_count", {"pid": PID}) >= 3


def test_metrics_route_serves_the_runtime_text(tmp_path: Path) -> None:
    app = FastAPI(lifespan=bitsec_lifespan(config(tmp_path)))
    app.include_router(metrics_router())
    with TestClient(app) as client:
        app.state.bitsec.check_permission(PRINCIPAL, "docs", "read")
        r = client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == PROMETHEUS_TEXT_CONTENT_TYPE
        fams = families(r.text)
        assert fams["bitsec_operation_duration_seconds"].type == "histogram"
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_metrics_route_serves_a_registry_in_the_format_asked_for(tmp_path: Path) -> None:
    rt = bitsec.Runtime(config(tmp_path))
    registry = CollectorRegistry()
    registry.register(BitsecCollector(rt))
    app = FastAPI(lifespan=bitsec_lifespan(rt))
    app.include_router(metrics_router("/internal/metrics", registry=registry))
    try:
        with TestClient(app) as client:
            rt.check_permission(PRINCIPAL, "docs", "read")
            text = client.get("/internal/metrics")
            assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
            assert 'bitsec_operation_duration_seconds_count{operation="permission_check",pid="' in text.text
            om = client.get("/internal/metrics", headers={"Accept": OPENMETRICS})
            assert om.headers["content-type"].startswith(OPENMETRICS.split(";")[0] + ";")
            assert om.text.endswith("# EOF\n")
            assert client.get("/metrics").status_code == 404
    finally:
        rt.close()


def test_import_without_prometheus_client_names_the_extra() -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "try:\n    import bitsec.prometheus\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "pip install 'bitsec[prometheus]'" in out.stdout


def test_a_forked_child_starts_its_histograms_from_zero(tmp_path: Path) -> None:
    with bitsec.Runtime(config(tmp_path)) as rt:
        for _ in range(5):
            rt.check_permission(PRINCIPAL, "docs", "read")
        pid = os.fork()
        if pid == 0:  # the child: its own pid label, none of the parent's observations
            exit_status = 1
            try:
                fams = families(rt.metrics_text())
                mine = {s.labels["pid"] for s in fams["bitsec_operation_duration_seconds"].samples}
                counts = [s.value for s in fams["bitsec_operation_duration_seconds"].samples
                          if s.name.endswith("_count") and s.labels["operation"] == "permission_check"]
                rt.check_permission(PRINCIPAL, "docs", "read")
                after = [s.value for s in families(rt.metrics_text())["bitsec_operation_duration_seconds"].samples
                         if s.name.endswith("_count") and s.labels["operation"] == "permission_check"]
                exit_status = 0 if mine == {str(os.getpid())} and counts == [0] and after == [1] else 3
            finally:
                os._exit(exit_status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent keeps its own counts.
        fams = families(rt.metrics_text())
        assert [s.value for s in fams["bitsec_operation_duration_seconds"].samples
                if s.name.endswith("_count") and s.labels["operation"] == "permission_check"] == [5]
