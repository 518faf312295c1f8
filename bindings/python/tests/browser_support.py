"""A real headless browser for the reference service's browser-facing tests.

Debian's ``chromium`` and ``chromium-driver`` (installed by ``make test``), driven by Selenium
with explicit paths: nothing is downloaded, and a missing browser is an error, not a skip.
Runs as root in CI, hence ``--no-sandbox``. The browser's console log is kept so that tests
can read the Content-Security-Policy violations it reports.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def make_driver() -> Any:
    for p in (CHROMIUM, CHROMEDRIVER):
        if not p.exists():
            pytest.fail(f"{p} is missing: `make test` installs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = make_driver()
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(cond: Callable[[], Any], what: str, bound: float = 30.0, driver: Any = None) -> Any:
    """Poll ``cond`` until it returns a true value (a bound, not a timing assertion: a
    condition that never holds fails with ``what``)."""
    deadline = time.monotonic() + bound
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except Exception as e:  # an element not there yet
            last = e
        else:
            if last:
                return last
        time.sleep(0.1)
    log = "" if driver is None else "\nbrowser console:\n" + "\n".join(
        e["message"] for e in driver.get_log("browser"))
    pytest.fail(f"timed out waiting for {what} (last: {last!r}){log}")


def csp_violations(driver: Any) -> list[str]:
    """The console messages that report a Content-Security-Policy refusal since the last call."""
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
