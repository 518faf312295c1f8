"""The ERP guide's input rules on every write of the reference service (strict Pydantic
models: an unknown member is a 422), and its CORS allow-list from the configuration."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from refsvc_support import API, CONFIG, Service, bearer, svc  # noqa: F401 (svc is a fixture)

ALLOWED = "https://erp.bitcorp.example"  # config.json's service.cors.allow_origins
EVIL = "https://evil.example"


def test_the_guides_equipment_rules(svc: Service) -> None:
    h = bearer(svc.token("alice"))
    for body in ({"name": "<script>alert(1)</script>"}, {"name": "Lathe\"; DROP"}, {"name": "a&b"},
                 {"name": "Lathe", "serial_number": "sn-123"}, {"name": "Lathe", "serial_number": "SN 1"},
                 {"name": "Lathe", "cost": -1}, {"name": "Lathe", "cost": "-0.01"},
                 {"name": "Lathe", "tenant_id": "fab-2"}, {"name": "Lathe", "created_by": 1}):
        r = svc.client.post(f"{API}/equipment", json=body, headers=h)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert "<script>" not in r.text  # the refused value is not echoed
    eid = svc.client.post(f"{API}/equipment", json={"name": "Lathe", "serial_number": "SN-123"}, headers=h).json()["id"]
    for body in ({"name": "<b>x</b>"}, {"serial_number": "lower"}, {"cost": -5}, {"owner": "me"}):
        assert svc.client.put(f"{API}/equipment/{eid}", json=body, headers=h).status_code == 422, body
    # notes are free text, kept as written (not stripped); JSON output, never HTML
    notes = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    r = svc.client.put(f"{API}/equipment/{eid}", json={"notes": notes}, headers=h)
    assert r.status_code == 200 and r.json()["notes"] == notes
    got = svc.client.get(f"{API}/equipment/{eid}", headers=h)
    assert got.headers["content-type"] == "application/json" and got.headers["x-content-type-options"] == "nosniff"
    assert got.json()["notes"] == notes


@pytest.mark.parametrize("method,path,body", [
    ("POST", f"{API}/auth/login", {"username": "alice", "password": "alice-password-1", "admin": True}),
    ("POST", f"{API}/auth/refresh", {"refresh_token": "x", "x": 1}),
    ("POST", "/v1/inspections", {"lot_id": "L", "station": "S", "status": "passed"}),
    ("POST", "/v1/defects", {"inspection_id": 1, "defect_type": "x", "severity": "low", "status": "fixed"}),
    ("POST", "/v1/reports", {"title": "t", "inspection_ids": [1], "summary": {}}),
    ("POST", "/v1/infer", {"features": [1.0], "model": "other"}),
])
def test_unknown_members_are_refused_on_every_write(svc: Service, method: str, path: str, body: dict) -> None:
    svc.add_user("root", ["super_admin"])
    r = svc.client.request(method, path, json=body, headers=bearer(svc.token("root", client=svc.client_at("10.7.0.1"))))
    assert r.status_code == 422, r.text
    assert any(e["type"] == "extra_forbidden" for e in r.json()["detail"])


def test_every_request_body_model_forbids_unknown_members() -> None:
    from fastapi.routing import APIRoute
    from pydantic import BaseModel

    import tempfile
    from examples.fastapi_service import create_app
    app = create_app(CONFIG, f"sqlite:///{tempfile.mkdtemp()}/s.db")

    def walk(routes: Any) -> Iterator[APIRoute]:
        for r in routes:
            if isinstance(r, APIRoute):
                yield r
            elif hasattr(r, "original_router"):  # FastAPI's included routers
                yield from walk(r.original_router.routes)

    models = set()
    for route in walk(app.routes):
        if route.body_field is not None:
            t = route.body_field.field_info.annotation
            for cand in getattr(t, "__args__", (t,)):
                # FastAPI's generated model of a multipart form (the upload: test below)
                if isinstance(cand, type) and issubclass(cand, BaseModel) and not cand.__name__.startswith("Body_"):
                    models.add(cand)
    assert len(models) >= 12
    for m in models:
        assert m.model_config.get("extra") == "forbid", m


def test_unknown_form_fields_of_an_upload_are_refused(svc: Service) -> None:
    svc.add_user("ada", "inspection.admin")
    h = bearer(svc.token("ada"))
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 8
    r = svc.client.post("/v1/artifacts", files={"file": ("a.png", png, "image/png")}, data={"tenant_id": "fab-2"}, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "extra_forbidden"
    r = svc.client.post("/v1/artifacts", files=[("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))],
                        headers=h)
    assert r.status_code == 422
    assert svc.client.post("/v1/artifacts", files={"file": ("a.png", png, "image/png")}, headers=h).status_code == 201


# ---- CORS -----------------------------------------------------------------------------------

def test_preflight_from_a_listed_origin_is_answered(svc: Service) -> None:
    r = svc.client.options(f"{API}/equipment", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                                                        "Access-Control-Request-Headers": "authorization,content-type"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert r.headers["vary"].lower().count("origin") >= 1
    assert "content-security-policy" in r.headers  # the security headers on preflights too


def test_other_origins_get_no_cors_grant(svc: Service) -> None:
    r = svc.client.options(f"{API}/equipment", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 400
    assert not any(k.lower().startswith("access-control-allow") for k in r.headers)
    h = bearer(svc.token("alice"))
    r = svc.client.get(f"{API}/equipment", headers={**h, "Origin": EVIL})
    assert r.status_code == 200  # not a CORS matter server-side: the browser withholds it from the page
    assert "access-control-allow-origin" not in r.headers and "access-control-allow-credentials" not in r.headers
    r = svc.client.get(f"{API}/equipment", headers={**h, "Origin": ALLOWED})
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "X-Request-ID" in r.headers["access-control-expose-headers"]


def test_cors_configuration_is_checked(tmp_path: Path) -> None:
    from examples.fastapi_service import create_app
    for bad in (["*"], ["https://*.example.com"], ["https://a.example/path"], "https://a.example"):
        cfg = json.loads(CONFIG.read_text())
        cfg["service"]["cors"]["allow_origins"] = bad
        cfg["permissions"]["policy_file"] = str(CONFIG.parent / "policy.json")
        p = tmp_path / "c.json"
        p.write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match="allow_origins"):
            create_app(p, f"sqlite:///{tmp_path}/s.db")
