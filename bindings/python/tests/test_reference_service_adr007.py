"""ADR-007's defects, reports, artifacts and inference endpoints of the reference service over
HTTP (the role matrix of each is in test_reference_service_rbac.py)."""
from __future__ import annotations

import os
import stat

from refsvc_support import Service, bearer, svc  # noqa: F401 (svc is a fixture)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _admin(svc: Service) -> dict[str, str]:
    svc.add_user("ada", "inspection.admin")
    return bearer(svc.token("ada"))


def _inspection(svc: Service, h: dict[str, str], lot: str = "L-1") -> int:
    r = svc.client.post("/v1/inspections", json={"lot_id": lot, "station": "AOI-1"}, headers=h)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_defects_crud_linked_to_an_inspection(svc: Service) -> None:
    h = _admin(svc)
    iid = _inspection(svc, h)
    r = svc.client.post("/v1/defects", json={"inspection_id": iid, "defect_type": "solder_bridge", "severity": "high",
                                             "description": "U7 pins 3-4"}, headers=h)
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    assert svc.client.get(f"/v1/inspections/{iid}", headers=h).json()["defect_count"] == 1
    assert [d["id"] for d in svc.client.get("/v1/defects", params={"inspection_id": iid}, headers=h).json()["items"]] == [did]
    r = svc.client.put(f"/v1/defects/{did}", json={"status": "confirmed"}, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "confirmed" and r.json()["severity"] == "high"
    # an unknown inspection (or another tenant's) is a 404, an unknown field or severity a 422
    assert svc.client.post("/v1/defects", json={"inspection_id": 9999, "defect_type": "x", "severity": "low"},
                           headers=h).status_code == 404
    assert svc.client.post("/v1/defects", json={"inspection_id": iid, "defect_type": "x", "severity": "fatal"},
                           headers=h).status_code == 422
    assert svc.client.post("/v1/defects", json={"inspection_id": iid, "defect_type": "x", "severity": "low",
                                                "tenant_id": "fab-2"}, headers=h).status_code == 422
    assert svc.client.put(f"/v1/defects/{did}", json={"status": None}, headers=h).status_code == 422
    svc.add_user("eve", "inspection.admin", tenant="fab-2")
    other = bearer(svc.token("eve"))
    assert svc.client.get(f"/v1/defects/{did}", headers=other).status_code == 404
    assert svc.client.post("/v1/defects", json={"inspection_id": iid, "defect_type": "x", "severity": "low"},
                           headers=other).status_code == 404
    assert svc.client.delete(f"/v1/defects/{did}", headers=h).status_code == 204
    assert svc.client.get(f"/v1/defects/{did}", headers=h).status_code == 404
    assert svc.client.get(f"/v1/inspections/{iid}", headers=h).json()["defect_count"] == 0


def test_reports_summarise_the_named_inspections(svc: Service) -> None:
    h = _admin(svc)
    a, b = _inspection(svc, h, "L-1"), _inspection(svc, h, "L-2")
    assert svc.client.put(f"/v1/inspections/{b}", json={"status": "failed"}, headers=h).status_code == 200
    for sev in ("high", "high", "low"):
        assert svc.client.post("/v1/defects", json={"inspection_id": a, "defect_type": "void", "severity": sev},
                               headers=h).status_code == 201
    r = svc.client.post("/v1/reports", json={"title": "Week 49", "inspection_ids": [a, b, a]}, headers=h)
    assert r.status_code == 201, r.text
    rep = r.json()
    assert rep["summary"] == {"inspection_ids": sorted([a, b]), "inspections": 2, "by_status": {"open": 1, "failed": 1},
                              "defects_by_severity": {"high": 2, "low": 1}}
    assert svc.client.get(f"/v1/reports/{rep['id']}", headers=h).json() == rep
    assert svc.client.post("/v1/reports", json={"title": "x", "inspection_ids": [a, 9999]}, headers=h).status_code == 404
    assert svc.client.post("/v1/reports", json={"title": "x", "inspection_ids": []}, headers=h).status_code == 422


def test_artifact_upload_download_and_refusals(svc: Service) -> None:
    h = _admin(svc)
    iid = _inspection(svc, h)
    r = svc.client.post("/v1/artifacts", files={"file": ("../../etc/passwd.png", PNG, "image/png")},
                        data={"inspection_id": str(iid)}, headers=h)
    assert r.status_code == 201, r.text
    art = r.json()
    assert art["size"] == len(PNG) and art["content_type"] == "image/png" and art["inspection_id"] == iid
    # stored under a generated name, 0600, in the data directory; the client's name is not a path
    store = svc.app.state.data_dir / "artifacts"
    [stored] = [p for p in store.iterdir() if not p.name.startswith(".")]
    assert len(stored.name) == 32 and stored.read_bytes() == PNG
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    d = svc.client.get(art["download"], headers=h)
    assert d.status_code == 200 and d.content == PNG
    assert d.headers["content-type"] == "image/png"
    assert d.headers["content-disposition"] == f'attachment; filename="artifact-{art["id"]}.png"'
    assert d.headers["x-content-type-options"] == "nosniff"
    # download needs a token of the same tenant
    assert svc.client.get(art["download"]).status_code == 401
    svc.add_user("eve", "inspection.admin", tenant="fab-2")
    assert svc.client.get(art["download"], headers=bearer(svc.token("eve"))).status_code == 404
    # a type outside the allow-list, a disguised file, an empty one, one over the limit
    assert svc.client.post("/v1/artifacts", files={"file": ("x.html", b"<script>", "text/html")},
                           headers=h).status_code == 415
    assert svc.client.post("/v1/artifacts", files={"file": ("x.png", b"<svg onload=alert(1)>", "image/png")},
                           headers=h).status_code == 415
    assert svc.client.post("/v1/artifacts", files={"file": ("x.csv", b"a,b\n\x00", "text/csv")},
                           headers=h).status_code == 415
    assert svc.client.post("/v1/artifacts", files={"file": ("x.png", b"", "image/png")}, headers=h).status_code == 422
    big = PNG + b"\0" * (5 << 20)
    assert svc.client.post("/v1/artifacts", files={"file": ("x.png", big, "image/png")}, headers=h).status_code == 413
    assert [p.name for p in store.iterdir()] == [stored.name]  # nothing left of the refused uploads


def test_uploads_take_the_upload_rate_category(svc: Service) -> None:
    h = _admin(svc)
    statuses = [svc.client.post("/v1/artifacts", files={"file": ("x.png", PNG, "image/png")}, headers=h).status_code
                for _ in range(23)]
    assert statuses[:20] == [201] * 20 and 429 in statuses[20:]  # ADR-007: 20 uploads per 5 minutes
    assert svc.client.get("/v1/defects", headers=h).status_code == 200  # other categories unaffected


def test_infer_is_deterministic_and_rate_limited_as_inference(svc: Service) -> None:
    h = _admin(svc)
    first = svc.client.post("/v1/infer", json={"features": [0.25, 1.5, -3.0]}, headers=h)
    assert first.status_code == 200, first.text
    assert first.json()["model"] == "stand-in-1" and 0.5 <= first.json()["confidence"] <= 1.0
    assert svc.client.post("/v1/infer", json={"features": [0.25, 1.5, -3.0]}, headers=h).json() == first.json()
    assert svc.client.post("/v1/infer", json={"features": []}, headers=h).status_code == 422
    assert svc.client.post("/v1/infer", json={"features": [1], "x": 1}, headers=h).status_code == 422
    statuses = [svc.client.post("/v1/infer", json={"features": [float(i)]}, headers=h).status_code for i in range(60)]
    # 50 a minute; the 4 requests above took 4 (the 422s too: the limit comes before the body)
    assert statuses[:46] == [200] * 46 and statuses[-1] == 429
