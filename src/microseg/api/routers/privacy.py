"""Privacy endpoints: data-subject rights, consents, the audit log.

Roles: export / erase / correct a subject and read the audit log need **admin**. Consents are
read by **analyst** (and admin); they are written by **collector** keys too — a website's
consent banner posts the visitor's choice with the same key that sends their events — and by
admin. Every call is audited under the key id (``api:<key id>``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from microseg.api.auth import Principal
from microseg.api.deps import AdminKey, AnalystKey, Services, ServicesDep, require
from microseg.api.routers._json import json_response
from microseg.api.schemas import PROBLEM_RESPONSES
from microseg.privacy.audit import audit_entries
from microseg.privacy.consent import consent_history, current_consents, record_consent
from microseg.privacy.erasure import erase_subject
from microseg.privacy.subject import correct_subject, export_subject, json_safe, resolve_subject

router = APIRouter(tags=["privacy"])
ConsentWriter = Annotated[Principal, Depends(require("collector"))]
NOT_FOUND = {
    **PROBLEM_RESPONSES,
    404: {"description": "unknown data subject", "content": {"application/problem+json": {}}},
}


def actor(principal: Principal) -> str:
    return "api:" + principal.key_id


class EraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="why (e.g. the request id)")
    include_linked: bool = Field(
        default=False, description="also erase unmerged profiles linked by an identity edge"
    )


class CorrectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attributes: dict[str, str | None] = Field(
        min_length=1, description="attribute -> corrected value (null removes it)"
    )


class ConsentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(min_length=1, max_length=64)
    granted: bool
    source: str = Field(min_length=1, max_length=200)
    expires_at: datetime | None = None


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    from datetime import UTC

    return value.astimezone(UTC).replace(tzinfo=None)


@router.get(
    "/subjects/{ref:path}/export",
    summary="Everything held about a person (PII decrypted; the read is audited)",
    responses=NOT_FOUND,
)
def export(ref: str, key: AdminKey, services: ServicesDep) -> Response:
    return json_response(export_subject(services.workspace, ref, actor=actor(key)))


@router.post(
    "/subjects/{ref:path}/erase",
    summary="Erase a person everywhere (crypto-shredding; re-imports are quarantined)",
    responses=NOT_FOUND,
)
async def erase(ref: str, body: EraseRequest, key: AdminKey, services: ServicesDep) -> Response:
    report = await run_in_threadpool(_erase, services, ref, body, actor(key))
    return json_response(report)


def _erase(services: Services, ref: str, body: EraseRequest, who: str) -> dict[str, Any]:
    ws = services.workspace
    report = erase_subject(
        ws,
        ref,
        body.reason,
        actor=who,
        include_linked=body.include_linked,
        skip_dirs=[services.collector.spool.directory],  # live; its lines import as erased
    )
    # the in-memory serving state must forget the person too
    services.state.reload(
        ws.store,
        traits_table=services.settings.traits_table,
        membership_table=services.settings.membership_table,
    )
    return report.as_dict()


@router.patch("/subjects/{ref:path}", summary="Correct a person's attributes", responses=NOT_FOUND)
def correct(ref: str, body: CorrectRequest, key: AdminKey, services: ServicesDep) -> Response:
    done = [
        correct_subject(services.workspace, ref, name, value, actor=actor(key))
        for name, value in body.attributes.items()
    ]
    return json_response({"corrected": done})


@router.get(
    "/consents/{ref:path}", summary="A person's consents: in force and history", responses=NOT_FOUND
)
def consents(ref: str, _key: AnalystKey, services: ServicesDep) -> Response:
    ws = services.workspace
    subject = resolve_subject(ws, ref)
    history = consent_history(ws.store, subject.profile_ids)
    return json_response(
        {
            "profile_id": subject.profile_id,
            "current": [
                json_safe(s.as_dict())
                for p in subject.profile_ids
                for s in current_consents(ws.store, p)
            ],
            "history": json_safe(history.to_dict(orient="records")),
        }
    )


@router.post(
    "/consents/{ref:path}",
    summary="Record a grant or revoke (effective at once on every path)",
    status_code=201,
    responses=NOT_FOUND,
)
def set_consent(
    ref: str, body: ConsentRequest, key: ConsentWriter, services: ServicesDep
) -> Response:
    ws = services.workspace
    subject = resolve_subject(ws, ref)
    change = record_consent(
        ws.store,
        subject.profile_id,
        body.purpose,
        body.granted,
        source=body.source,
        expires_at=_naive_utc(body.expires_at),
        actor=actor(key),
        settings=ws.settings,
    )
    return json_response(
        {
            "profile_id": change.profile_id,
            "purpose": change.purpose,
            "granted": change.granted,
            "source": change.source,
            "recorded_at": change.recorded_at,
            "expires_at": change.expires_at,
        },
        201,
    )


@router.get("/audit", summary="The audit log, newest first", responses=PROBLEM_RESPONSES)
def audit(
    _key: AdminKey,
    services: ServicesDep,
    actor_: Annotated[str | None, Query(alias="actor", max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=100, description="prefix with *")] = None,
    about: Annotated[str | None, Query(max_length=200, description="a profile id")] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    df = audit_entries(
        services.workspace.store,
        actor=actor_,
        action=action,
        about=about,
        since=_naive_utc(since),
        limit=limit,
    )
    return json_response({"entries": json_safe(df.to_dict(orient="records"))})
