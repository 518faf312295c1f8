"""The reference service's alerts fire: each outcome is recorded once (a 403 once, not by both
the library and the audit middleware; a login as ``login``/``failed_login``, not as a generic
``unauthorized``), the rules in deploy/prometheus/bitsec-rules.yml pass their own promtool unit
tests, and the counters scraped from the real service's /metrics, fed to promtool at synthetic
timestamps, make each alert fire at the first count above its threshold and not at the
threshold itself."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from refsvc_support import API, ROOT, Service, bearer, svc  # noqa: F401 (svc is a fixture)

RULES = ROOT / "deploy" / "prometheus" / "bitsec-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "bitsec-rules.test.yml"
PROMTOOL = "/usr/bin/promtool"  # Debian's prometheus package (make test installs it)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(s: Service) -> dict[str, float]:
    """``{series: value}`` of the service's /metrics (the real endpoint, as Prometheus reads it)."""
    s.rt.audit_flush()
    r = s.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def value(scraped: dict[str, float], series: str) -> float:
    return scraped.get(series, 0.0)


def records(s: Service) -> list[dict[str, Any]]:
    s.rt.audit_flush()
    return [json.loads(line) for line in s.audit_path.read_text().splitlines()]


def of_request(s: Service, rid: str) -> list[dict[str, Any]]:
    return [e for e in records(s) if (e.get("details") or {}).get("request_id") == rid]


# ---- one record per outcome -------------------------------------------------------------

def test_each_403_is_recorded_once(svc: Service) -> None:
    viewer = svc.token("victor")
    r = svc.client.post(f"{API}/equipment", json={"name": "Lathe"}, headers={**bearer(viewer), "X-Request-ID": "deny-1"})
    assert r.status_code == 403
    s = scrape(svc)
    assert value(s, 'authorization_events_total{event_subtype="permission_denied",result="denied"}') == 1
    denied = [e for e in records(svc) if e.get("type") == "authorization"]
    assert len(denied) == 1, denied
    assert denied[0]["resource"] == "equipment" and denied[0]["action"] == "create" and denied[0]["result"] == "denied"
    # the record kept has the decision's reason and the request's context
    assert denied[0]["reason"] == "no_grant" and denied[0]["details"]["request_id"] == "deny-1"
    assert denied[0]["details"]["path"] == f"{API}/equipment" and denied[0]["actor"] == str(svc.ids["victor"])


def test_a_refusal_the_endpoint_records_is_not_recorded_again(svc: Service) -> None:
    alice, victor = svc.pair("alice"), svc.pair("victor")
    r = svc.client.post(f"{API}/auth/logout", json={"refresh_token": victor["refresh_token"]},
                        headers={**bearer(alice["access_token"]), "X-Request-ID": "foreign-1"})
    assert r.status_code == 403
    events = of_request(svc, "foreign-1")
    assert [(e["type"], e["subtype"]) for e in events] == [("authorization", "foreign_token")]
    assert value(scrape(svc), 'authorization_events_total{event_subtype="foreign_token",result="denied"}') == 1


def test_logins_are_recorded_as_login_and_failed_login(svc: Service) -> None:
    ok = svc.client.post(f"{API}/auth/login", json={"username": "alice", "password": "alice-password-1"},
                         headers={"X-Request-ID": "login-ok"})
    assert ok.status_code == 200
    bad = svc.client.post(f"{API}/auth/login", json={"username": "alice", "password": "wrong"},
                          headers={"X-Request-ID": "login-bad"})
    assert bad.status_code == 401
    unknown = svc.client.post(f"{API}/auth/login", json={"username": "nobody", "password": "wrong"},
                              headers={"X-Request-ID": "login-unknown"})
    assert unknown.status_code == 401
    [success] = of_request(svc, "login-ok")
    assert (success["type"], success["subtype"], success["result"]) == ("authentication", "login", "success")
    assert success["actor"] == str(svc.ids["alice"])
    [failure] = of_request(svc, "login-bad")
    assert (failure["type"], failure["subtype"], failure["result"]) == ("authentication", "failed_login", "failure")
    assert failure["reason"] == "invalid_credentials"
    [failure2] = of_request(svc, "login-unknown")
    assert failure2["subtype"] == "failed_login" and "actor" not in failure2  # no account: no actor
    text = json.dumps(records(svc))
    assert "wrong" not in text and "alice-password-1" not in text  # no password in the trail
    s = scrape(svc)
    assert value(s, 'authentication_events_total{event_subtype="login",result="success"}') == 1
    assert value(s, 'authentication_events_total{event_subtype="failed_login",result="failure"}') == 2
    assert value(s, 'authentication_events_total{event_subtype="unauthorized",result="failure"}') == 0


# ---- the rules ----------------------------------------------------------------------------

def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    r = promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr


#: alert -> (the metric families it reads, its `for` in minutes)
ALERTS = {
    "HighFailedLoginRate": (["authentication_events_total"], 2),
    "UnauthorizedAccessAttempt": (["authorization_events_total"], 1),
    "SuspiciousDataAccess": (["data_access_events_total"], 5),
    "BruteForceBlock": (["authentication_events_total"], 0),
    "RateLimitedClients": (["rate_limit_events_total"], 0),
}


def _rule(alert: str) -> dict[str, Any]:
    """labels and annotations of ``alert`` in the rules file (a minimal reader of its layout)."""
    text = RULES.read_text()
    block = text.split(f"- alert: {alert}\n", 1)[1].split("- alert:", 1)[0]
    out: dict[str, Any] = {"labels": {}, "annotations": {}}
    section = None
    for line in block.splitlines():
        stripped = line.strip()
        if stripped in ("labels:", "annotations:"):
            section = stripped[:-1]
        elif section and ": " in stripped and line.startswith(" " * 10):
            k, v = stripped.split(": ", 1)
            out[section][k] = v
        elif stripped and not line.startswith(" " * 10):
            section = None
    return out


def _case(alert: str, scraped: dict[str, float], fires: bool) -> dict[str, Any]:
    """A promtool test: every scraped series of the alert's families steps from 0 to its
    scraped value one minute in; the alert is evaluated once its ``for`` has passed."""
    families, for_minutes = ALERTS[alert]
    series = [{"series": name, "values": f"0 {int(v)}x70"} for name, v in sorted(scraped.items())
              if name.split("{")[0] in families]
    rule = _rule(alert)
    expected = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}] if fires else []
    return {"interval": "1m", "input_series": series,
            "alert_rule_test": [{"eval_time": f"{for_minutes + 2}m", "alertname": alert, "exp_alerts": expected}]}


def test_alerts_fire_from_the_services_metrics_at_their_thresholds(tmp_path: Path) -> None:
    s = Service(tmp_path)
    cases: list[dict[str, Any]] = []
    with s.client:
        # HighFailedLoginRate: 1 failure of 9 logins is above 10%, 1 of 10 is not.
        c = s.client_at("10.1.0.1")
        assert s.login("alice", "wrong", client=c).status_code == 401
        for _ in range(8):
            assert s.login("alice", client=c).status_code == 200
        above = scrape(s)
        assert value(above, 'authentication_events_total{event_subtype="failed_login",result="failure"}') == 1
        assert value(above, 'authentication_events_total{event_subtype="login",result="success"}') == 8
        assert s.login("alice", client=c).status_code == 200
        cases += [_case("HighFailedLoginRate", above, True), _case("HighFailedLoginRate", scrape(s), False)]

        # UnauthorizedAccessAttempt: 11 refused requests fire, 10 do not (each 403 counted once).
        viewer = s.token("victor", client=s.client_at("10.1.0.2"))
        for _ in range(10):
            assert s.client.post(f"{API}/equipment", json={"name": "x"}, headers=bearer(viewer)).status_code == 403
        at = scrape(s)
        assert value(at, 'authorization_events_total{event_subtype="permission_denied",result="denied"}') == 10
        assert s.client.delete(f"{API}/equipment/1", headers=bearer(viewer)).status_code == 403
        cases += [_case("UnauthorizedAccessAttempt", at, False), _case("UnauthorizedAccessAttempt", scrape(s), True)]

        # BruteForceBlock: the fifth failure from one address starts a block; the library records
        # the block (authentication/blocked) when it refuses the next attempt.
        c = s.client_at("10.1.0.3")
        assert [s.login("mia", "wrong", client=c).status_code for _ in range(5)] == [401] * 4 + [429]
        before = scrape(s)
        assert value(before, 'authentication_events_total{event_subtype="blocked",result="denied"}') == 0
        assert s.login("mia", client=c).status_code == 429
        after = scrape(s)
        assert value(after, 'authentication_events_total{event_subtype="blocked",result="denied"}') == 1
        cases += [_case("BruteForceBlock", before, False), _case("BruteForceBlock", after, True)]

        # RateLimitedClients: six clients over the auth category's limit fire, five do not.
        def flood(ip: str) -> None:
            c = s.client_at(ip)
            statuses = [c.get(f"{API}/auth/me").status_code for _ in range(12)]
            assert statuses[-1] == 429, statuses
        for i in range(5):
            flood(f"10.2.0.{i + 1}")
        five = scrape(s)
        assert value(five, 'rate_limit_events_total{event_subtype="rate_limited",result="denied"}') == 5
        flood("10.2.0.6")
        cases += [_case("RateLimitedClients", five, False), _case("RateLimitedClients", scrape(s), True)]

        # SuspiciousDataAccess: 101 writes to sensitive records in an hour fire, 100 do not.
        tokens = [s.token("alice", client=s.client_at("10.1.0.4")), s.token("mia", client=s.client_at("10.1.0.5"))]
        for i in range(100):
            r = s.client.post(f"{API}/equipment", json={"name": f"Press {i}"}, headers=bearer(tokens[i % 2]))
            assert r.status_code == 201, r.text
        hundred = scrape(s)
        assert value(hundred, 'data_access_events_total{event_subtype="create",result="success",sensitive_data_accessed="true"}') == 100
        assert s.client.post(f"{API}/equipment", json={"name": "Press 100"}, headers=bearer(tokens[0])).status_code == 201
        cases += [_case("SuspiciousDataAccess", hundred, False), _case("SuspiciousDataAccess", scrape(s), True)]

    generated = tmp_path / "scraped.test.yml"  # JSON is YAML
    generated.write_text(json.dumps({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": cases}, indent=1))
    r = promtool("test", "rules", str(generated))
    assert r.returncode == 0, r.stdout + r.stderr

    # and the generated cases do tell: with every expectation inverted, each case fails
    for case in cases:
        t = case["alert_rule_test"][0]
        t["exp_alerts"] = [] if t["exp_alerts"] else [{"exp_labels": _rule(t["alertname"])["labels"],
                                                        "exp_annotations": _rule(t["alertname"])["annotations"]}]
    generated.write_text(json.dumps({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": cases}, indent=1))
    r = promtool("test", "rules", str(generated))
    assert r.returncode != 0
    assert (r.stdout + r.stderr).count("FAILED") >= 1
