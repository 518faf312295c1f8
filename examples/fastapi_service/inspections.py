"""ADR-007's inspections API (``/v1/inspections``), guarded by ADR-007's roles through
``@guard("inspections", <action>)`` (decided by ``GuardMiddleware`` before the handler) and scoped to the caller's tenant."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from bitsec.fastapi import guard, guard_claims

from .common import StrictModel, Deps, RowId
from .models import iso, utcnow

Status = Literal["open", "passed", "failed"]


class InspectionIn(StrictModel):
    lot_id: str = Field(min_length=1, max_length=64)
    station: str = Field(min_length=1, max_length=64)
    defect_count: int = Field(default=0, ge=0, le=1_000_000, strict=True)  # a JSON integer: not true, "3", 3.0
    findings: str | None = Field(default=None, max_length=10000)


class InspectionPatch(StrictModel):
    """A partial update; ``status`` "passed" or "failed" closes the inspection (``closed_at``),
    a closed inspection is not reopened and not edited (409)."""
    station: str | None = Field(default=None, min_length=1, max_length=64)
    defect_count: int | None = Field(default=None, ge=0, le=1_000_000, strict=True)
    findings: str | None = Field(default=None, max_length=10000)
    status: Status | None = None


def inspection_out(i: Any) -> dict[str, Any]:
    return {"id": i.id, "tenant_id": i.tenant_id, "lot_id": i.lot_id, "station": i.station, "status": i.status,
            "defect_count": i.defect_count, "findings": i.findings, "created_by": i.created_by,
            "created_at": iso(i.created_at), "updated_at": iso(i.updated_at), "closed_at": iso(i.closed_at)}


def inspections_router(deps: Deps) -> APIRouter:
    router = APIRouter(prefix="/v1/inspections", tags=["inspections"])
    Inspection = deps.models.Inspection
    auth, db_session = deps.auth, deps.db_session

    def get_one(db: Session, claims: Any, iid: int) -> Any:
        i = db.scalar(select(Inspection).where(Inspection.id == iid, Inspection.tenant_id == claims.tenant_id))
        if i is None:
            raise HTTPException(status_code=404, detail="Inspection not found")
        return i

    @router.get("")
    @guard("inspections", "read")
    def list_inspections(status: Status | None = None, lot_id: str | None = Query(default=None, max_length=64),
                         limit: int = Query(default=100, ge=1, le=1000),
                         claims: Any = Depends(guard_claims),
                         db: Session = Depends(db_session)) -> dict[str, Any]:
        q = select(Inspection).where(Inspection.tenant_id == claims.tenant_id)
        if status is not None:
            q = q.where(Inspection.status == status)
        if lot_id is not None:
            q = q.where(Inspection.lot_id == lot_id)  # a bound parameter
        return {"items": [inspection_out(i) for i in db.scalars(q.order_by(Inspection.id).limit(limit))]}

    @router.post("", status_code=201)
    @guard("inspections", "create")
    def create_inspection(body: InspectionIn,
                          claims: Any = Depends(guard_claims),
                          db: Session = Depends(db_session)) -> dict[str, Any]:
        i = Inspection(tenant_id=claims.tenant_id, lot_id=body.lot_id, station=body.station, status="open",
                       defect_count=body.defect_count, findings=body.findings, created_by=_uid(claims))
        db.add(i)
        db.commit()
        return inspection_out(i)

    @router.get("/{iid}")
    @guard("inspections", "read")
    def get_inspection(iid: RowId, claims: Any = Depends(guard_claims),
                       db: Session = Depends(db_session)) -> dict[str, Any]:
        return inspection_out(get_one(db, claims, iid))

    @router.put("/{iid}")
    @guard("inspections", "update")
    def update_inspection(iid: RowId, body: InspectionPatch,
                          claims: Any = Depends(guard_claims),
                          db: Session = Depends(db_session)) -> dict[str, Any]:
        i = get_one(db, claims, iid)
        if i.status != "open":
            raise HTTPException(status_code=409, detail="Inspection is closed")
        fields = body.model_dump(exclude_unset=True)
        if fields.get("status", "open") is None or any(
                fields.get(k, 0) is None for k in ("station", "defect_count")):
            raise HTTPException(status_code=422, detail="station, defect_count and status cannot be null")
        for k, v in fields.items():
            setattr(i, k, v)
        now = utcnow()
        i.updated_at = now
        if i.status != "open":
            i.closed_at = now
        db.commit()
        return inspection_out(i)

    @router.delete("/{iid}", status_code=204)
    @guard("inspections", "delete")
    def delete_inspection(iid: RowId, claims: Any = Depends(guard_claims),
                          db: Session = Depends(db_session)) -> None:
        db.delete(get_one(db, claims, iid))
        db.commit()

    return router


def _uid(claims: Any) -> int | None:
    try:
        return int(claims.subject)
    except (TypeError, ValueError):
        return None
