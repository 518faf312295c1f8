"""ADR-007's defects, reports, artifacts and inference endpoints, each guarded by ADR-007's
roles (``@guard(resource, action)``, decided by ``GuardMiddleware`` before the handler) and scoped to the caller's tenant. Their rate categories come
from the path (``adr007_category``): a POST under ``/artifacts`` is ``upload`` (20 per 5
minutes), ``/infer`` is ``inference`` (50 a minute), the rest ``default``.

- ``/v1/defects``: CRUD; a defect belongs to an inspection of the same tenant (an unknown
  inspection is a 404), and creating or deleting one keeps the inspection's ``defect_count``.
- ``/v1/reports``: create (a summary of the named inspections, computed once and stored) and read.
- ``/v1/artifacts``: multipart upload (field ``file``, optional ``inspection_id``) of at most
  ``max_bytes`` (413 beyond), of an allowed content type whose first bytes match it (415
  otherwise: a declared ``image/png`` must start like a PNG), stored under a generated name in
  the data directory (mode 0600); download only within the tenant, as an attachment named after
  the artifact's id, never after the client's file name.
- ``/v1/infer``: a deterministic stand-in for the defect classifier (same input, same answer).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bitsec.fastapi import guard, guard_claims

from .common import Deps, RowId, StrictModel
from .models import iso, utcnow

Severity = Literal["low", "medium", "high", "critical"]
DefectStatus = Literal["open", "confirmed", "rejected", "fixed"]
#: a defect type or model input label: lower-case words joined by ``_`` (no markup, no spaces)
LABEL = r"^[a-z][a-z0-9_]{0,63}$"

#: content type -> the bytes a file of that type starts with (None: UTF-8 text without NUL)
DEFAULT_CONTENT_TYPES: dict[str, bytes | None] = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "application/pdf": b"%PDF-",
    "text/csv": None,
}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "application/pdf": "pdf", "text/csv": "csv"}
DEFAULT_MAX_BYTES = 5 << 20


class DefectIn(StrictModel):
    inspection_id: int = Field(ge=1, le=2 ** 63 - 1, strict=True)
    defect_type: str = Field(pattern=LABEL)
    severity: Severity
    description: str | None = Field(default=None, max_length=10000)


class DefectPatch(StrictModel):
    severity: Severity | None = None
    status: DefectStatus | None = None
    description: str | None = Field(default=None, max_length=10000)


class ReportIn(StrictModel):
    title: str = Field(min_length=1, max_length=200)
    inspection_ids: list[int] = Field(min_length=1, max_length=1000)


class InferIn(StrictModel):
    """Features of one die's inspection image, as the stand-in model takes them."""
    inspection_id: int | None = Field(default=None, ge=1, le=2 ** 63 - 1, strict=True)
    features: list[float] = Field(min_length=1, max_length=1024)


def defect_out(d: Any) -> dict[str, Any]:
    return {"id": d.id, "tenant_id": d.tenant_id, "inspection_id": d.inspection_id, "defect_type": d.defect_type,
            "severity": d.severity, "status": d.status, "description": d.description, "created_by": d.created_by,
            "created_at": iso(d.created_at), "updated_at": iso(d.updated_at)}


def report_out(r: Any) -> dict[str, Any]:
    return {"id": r.id, "tenant_id": r.tenant_id, "title": r.title, "summary": json.loads(r.summary),
            "created_by": r.created_by, "created_at": iso(r.created_at)}


def artifact_out(a: Any) -> dict[str, Any]:
    return {"id": a.id, "tenant_id": a.tenant_id, "inspection_id": a.inspection_id, "content_type": a.content_type,
            "size": a.size, "sha256": a.sha256, "created_by": a.created_by, "created_at": iso(a.created_at),
            "download": f"/v1/artifacts/{a.id}/content"}


def _uid(claims: Any) -> int | None:
    try:
        return int(claims.subject)
    except (TypeError, ValueError):
        return None


CLASSES = ["none", "scratch", "particle", "bridge", "void"]


def stand_in_model(features: list[float]) -> dict[str, Any]:
    """The deterministic stand-in classifier: a stable hash of the rounded features picks a
    class and a confidence (the same input always gets the same answer)."""
    digest = hashlib.sha256(json.dumps([round(f, 6) for f in features]).encode()).digest()
    label = CLASSES[digest[0] % len(CLASSES)]
    confidence = round(0.5 + (int.from_bytes(digest[1:3], "big") / 65535) * 0.5, 4)
    return {"model": "stand-in-1", "label": label, "confidence": confidence}


def adr007_router(deps: Deps, data_dir: Path, artifacts: dict[str, Any] | None = None) -> APIRouter:
    """``artifacts``: the service configuration's ``artifacts`` section (``max_bytes``,
    ``content_types``: a subset of ``DEFAULT_CONTENT_TYPES``)."""
    router = APIRouter(prefix="/v1", tags=["adr-007"])
    m = deps.models
    auth, db_session = deps.auth, deps.db_session
    conf = artifacts or {}
    max_bytes = int(conf.get("max_bytes", DEFAULT_MAX_BYTES))
    allowed = {t: DEFAULT_CONTENT_TYPES[t] for t in conf.get("content_types", DEFAULT_CONTENT_TYPES)}
    store = data_dir / "artifacts"
    store.mkdir(mode=0o700, parents=True, exist_ok=True)

    def inspection(db: Session, claims: Any, iid: int) -> Any:
        i = db.scalar(select(m.Inspection).where(m.Inspection.id == iid, m.Inspection.tenant_id == claims.tenant_id))
        if i is None:
            raise HTTPException(status_code=404, detail="Inspection not found")
        return i

    def one(db: Session, model: Any, claims: Any, rid: int, what: str) -> Any:
        row = db.scalar(select(model).where(model.id == rid, model.tenant_id == claims.tenant_id))
        if row is None:
            raise HTTPException(status_code=404, detail=f"{what} not found")
        return row

    # ---- defects ----

    @router.get("/defects")
    @guard("defects", "read")
    def list_defects(inspection_id: RowId | None = None,
                     claims: Any = Depends(guard_claims),
                     db: Session = Depends(db_session)) -> dict[str, Any]:
        q = select(m.Defect).where(m.Defect.tenant_id == claims.tenant_id)
        if inspection_id is not None:
            q = q.where(m.Defect.inspection_id == inspection_id)
        return {"items": [defect_out(d) for d in db.scalars(q.order_by(m.Defect.id).limit(1000))]}

    @router.post("/defects", status_code=201)
    @guard("defects", "create")
    def create_defect(body: DefectIn, claims: Any = Depends(guard_claims),
                      db: Session = Depends(db_session)) -> dict[str, Any]:
        i = inspection(db, claims, body.inspection_id)
        d = m.Defect(tenant_id=claims.tenant_id, inspection_id=i.id, defect_type=body.defect_type,
                     severity=body.severity, status="open", description=body.description, created_by=_uid(claims))
        db.add(d)
        i.defect_count = (i.defect_count or 0) + 1
        i.updated_at = utcnow()
        db.commit()
        return defect_out(d)

    @router.get("/defects/{did}")
    @guard("defects", "read")
    def get_defect(did: RowId, claims: Any = Depends(guard_claims),
                   db: Session = Depends(db_session)) -> dict[str, Any]:
        return defect_out(one(db, m.Defect, claims, did, "Defect"))

    @router.put("/defects/{did}")
    @guard("defects", "update")
    def update_defect(did: RowId, body: DefectPatch,
                      claims: Any = Depends(guard_claims),
                      db: Session = Depends(db_session)) -> dict[str, Any]:
        d = one(db, m.Defect, claims, did, "Defect")
        fields = body.model_dump(exclude_unset=True)
        if any(fields.get(k, 0) is None for k in ("severity", "status")):
            raise HTTPException(status_code=422, detail="severity and status cannot be null")
        for k, v in fields.items():
            setattr(d, k, v)
        d.updated_at = utcnow()
        db.commit()
        return defect_out(d)

    @router.delete("/defects/{did}", status_code=204)
    @guard("defects", "delete")
    def delete_defect(did: RowId, claims: Any = Depends(guard_claims),
                      db: Session = Depends(db_session)) -> None:
        d = one(db, m.Defect, claims, did, "Defect")
        i = db.get(m.Inspection, d.inspection_id)
        if i is not None and i.defect_count:
            i.defect_count -= 1
        db.delete(d)
        db.commit()

    # ---- reports ----

    @router.post("/reports", status_code=201)
    @guard("reports", "create")
    def create_report(body: ReportIn, claims: Any = Depends(guard_claims),
                      db: Session = Depends(db_session)) -> dict[str, Any]:
        ids = sorted(set(body.inspection_ids))
        rows = list(db.scalars(select(m.Inspection).where(m.Inspection.tenant_id == claims.tenant_id,
                                                          m.Inspection.id.in_(ids))))
        if len(rows) != len(ids):  # another tenant's inspection is as unknown as a missing one
            raise HTTPException(status_code=404, detail="Inspection not found")
        by_status: dict[str, int] = {}
        for i in rows:
            by_status[i.status] = by_status.get(i.status, 0) + 1
        severities = dict(db.execute(select(m.Defect.severity, func.count()).where(
            m.Defect.tenant_id == claims.tenant_id, m.Defect.inspection_id.in_(ids)).group_by(m.Defect.severity)).all())
        summary = {"inspection_ids": ids, "inspections": len(rows), "by_status": by_status,
                   "defects_by_severity": {k: int(v) for k, v in severities.items()}}
        r = m.Report(tenant_id=claims.tenant_id, title=body.title, summary=json.dumps(summary, sort_keys=True),
                     created_by=_uid(claims))
        db.add(r)
        db.commit()
        return report_out(r)

    @router.get("/reports")
    @guard("reports", "read")
    def list_reports(claims: Any = Depends(guard_claims),
                     db: Session = Depends(db_session)) -> dict[str, Any]:
        q = select(m.Report).where(m.Report.tenant_id == claims.tenant_id).order_by(m.Report.id).limit(1000)
        return {"items": [report_out(r) for r in db.scalars(q)]}

    @router.get("/reports/{rid}")
    @guard("reports", "read")
    def get_report(rid: RowId, claims: Any = Depends(guard_claims),
                   db: Session = Depends(db_session)) -> dict[str, Any]:
        return report_out(one(db, m.Report, claims, rid, "Report"))

    # ---- artifacts ----

    async def only_known_fields(request: Request) -> None:
        """A multipart form with a field other than ``file`` and ``inspection_id`` is a 422,
        as an unknown member of a JSON body is (``StrictModel``)."""
        form = await request.form()  # parsed once: FastAPI reuses it
        unknown = sorted(set(form.keys()) - {"file", "inspection_id"})
        if unknown or len(form.getlist("file")) > 1:
            raise RequestValidationError([{"type": "extra_forbidden", "loc": ("body", k), "msg": "Extra inputs are not permitted"}
                                          for k in unknown or ["file"]])

    @router.post("/artifacts", status_code=201, dependencies=[Depends(only_known_fields)])
    @guard("artifacts", "create")
    def upload_artifact(request: Request, file: UploadFile = File(...),
                        inspection_id: int | None = Form(default=None, ge=1, le=2 ** 63 - 1),
                        claims: Any = Depends(guard_claims),
                        db: Session = Depends(db_session)) -> dict[str, Any]:
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if ctype not in allowed:
            raise HTTPException(status_code=415, detail=f"Content type not allowed; allowed: {', '.join(sorted(allowed))}")
        if inspection_id is not None:
            inspection(db, claims, inspection_id)
        name = secrets.token_hex(16)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=store, prefix=".upload-")  # 0600, same file system
        try:
            with os.fdopen(fd, "wb") as out:
                head = b""
                while chunk := file.file.read(64 << 10):
                    size += len(chunk)
                    if size > max_bytes:
                        raise HTTPException(status_code=413, detail=f"Artifact larger than {max_bytes} bytes")
                    if len(head) < 16:
                        head = (head + chunk)[:16]
                    digest.update(chunk)
                    out.write(chunk)
                    if allowed[ctype] is None and b"\0" in chunk:
                        raise HTTPException(status_code=415, detail="The content does not match its content type")
            magic = allowed[ctype]
            if size == 0:
                raise HTTPException(status_code=422, detail="Empty artifact")
            if magic is not None and not head.startswith(magic):
                raise HTTPException(status_code=415, detail="The content does not match its content type")
            if magic is None:
                try:
                    Path(tmp).read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    raise HTTPException(status_code=415, detail="The content does not match its content type") from None
            os.replace(tmp, store / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        original = re.sub(r"[^A-Za-z0-9._-]", "_", (file.filename or ""))[:200] or None
        a = m.Artifact(tenant_id=claims.tenant_id, inspection_id=inspection_id, stored_name=name, content_type=ctype,
                       size=size, sha256=digest.hexdigest(), original_name=original, created_by=_uid(claims))
        db.add(a)
        db.commit()
        return artifact_out(a)

    @router.get("/artifacts/{aid}")
    @guard("artifacts", "read")
    def get_artifact(aid: RowId, claims: Any = Depends(guard_claims),
                     db: Session = Depends(db_session)) -> dict[str, Any]:
        return artifact_out(one(db, m.Artifact, claims, aid, "Artifact"))

    @router.get("/artifacts/{aid}/content")
    @guard("artifacts", "read")
    def download_artifact(aid: RowId, claims: Any = Depends(guard_claims),
                          db: Session = Depends(db_session)) -> FileResponse:
        a = one(db, m.Artifact, claims, aid, "Artifact")
        path = store / a.stored_name
        if not re.fullmatch(r"[0-9a-f]{32}", a.stored_name) or not path.is_file():
            raise HTTPException(status_code=404, detail="Artifact not found")
        # an attachment named after the id: a browser never renders an upload in the service's origin
        return FileResponse(path, media_type=a.content_type, filename=f"artifact-{a.id}.{EXTENSIONS[a.content_type]}",
                            content_disposition_type="attachment", headers={"Cache-Control": "private, no-store"})

    # ---- inference ----

    @router.post("/infer")
    @guard("inspections", "execute")
    def infer(body: InferIn, claims: Any = Depends(guard_claims),
              db: Session = Depends(db_session)) -> dict[str, Any]:
        if body.inspection_id is not None:
            inspection(db, claims, body.inspection_id)
        if any(f != f or f in (float("inf"), float("-inf")) for f in body.features):
            raise HTTPException(status_code=422, detail="features must be finite numbers")
        return {**stand_in_model(body.features), "inspection_id": body.inspection_id}

    return router
