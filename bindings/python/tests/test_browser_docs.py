"""The reference service's pages in a real browser (headless chromium): ``/docs`` renders
under the service's own security headers, and the CSP blocks an injected inline script.

The service runs as it is deployed (serve.py, two uvicorn workers, real HTTP on loopback).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from browser_support import browser, csp_violations, wait_for  # noqa: F401  (fixture)
from workers_support import WorkerService


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerService]:
    svc = WorkerService(tmp_path_factory.mktemp("browser"), "uvicorn", workers=2)
    try:
        yield svc
    finally:
        svc.stop()


def test_docs_render_under_the_service_headers(service: WorkerService, browser: Any) -> None:
    csp_violations(browser)  # start from an empty log
    browser.get(service.url + "/docs")
    title = wait_for(lambda: browser.find_element("css selector", ".swagger-ui .info .title").text,
                     "Swagger UI to render the API title", driver=browser)
    assert "bitsec reference service" in title
    # the operations of the API are listed (the OpenAPI document was fetched and rendered)
    ops = wait_for(lambda: browser.find_elements("css selector", ".opblock-summary-path"), "operations")
    paths = {o.get_attribute("data-path") or o.text for o in ops}
    assert any("/auth/login" in p for p in paths), paths
    # ... with nothing refused by the page's policy, and nothing loaded from another origin
    assert csp_violations(browser) == []
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {service.url}, origins


def test_docs_policy_is_the_service_policy_plus_one_script_hash(service: WorkerService) -> None:
    a = service.request("GET", "/docs")
    csp = a.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert csp.count("'sha256-") == 1
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    # every other response keeps the default policy (no script hashes at all)
    assert "sha256" not in service.request("GET", "/health").headers["content-security-policy"]


def test_an_injected_inline_script_is_blocked(service: WorkerService, browser: Any) -> None:
    for path in ("/docs", "/health"):
        browser.get(service.url + path)
        csp_violations(browser)
        ran = browser.execute_script("""
            window.__injected = false;
            const s = document.createElement('script');
            s.textContent = 'window.__injected = true';
            document.body.appendChild(s);
            return window.__injected;""")
        assert ran is False, f"an injected inline script ran on {path}"
        wait_for(lambda: csp_violations(browser), f"the CSP violation report on {path}")
