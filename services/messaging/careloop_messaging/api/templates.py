"""Message templates per organization and location: read, save, revert, preview.

Templates hold no PHI, but they decide what patients are told, so changes are an admin
right (`templates:manage`, MFA for roles that need it) and every change is audited
(resource `MessageTemplate`, no PHI category) like identity's admin changes. The
organization default changes every location's messages, so saving or reverting it needs
every location in scope; a location's template needs that location.

A save runs the PHI check of `TemplateCatalog.save`; a refusal is a 422 problem+json that
names the offending field or construct per part and lists what that part may use. Saves
are versions: nothing is overwritten, and DELETE appends a revert to the default.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Literal, NamedTuple

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.context import request_context
from careloop_messaging.domain.templates import Channel, MessageKind, TemplateKey
from careloop_messaging.store.repository import Templates
from careloop_messaging.usecases.templates import (
    SAMPLE_PRACTICE,
    Draft,
    EffectiveTemplate,
    TemplatesContext,
    effective_template,
    render_preview,
    revert_to_default,
    save_template_version,
    template_key,
    template_versions,
    templates_in_effect,
)

router = APIRouter(prefix="/templates", tags=["templates"])

KEY_PATH = "/{kind}/{channel}/{language}"

ReadContext = Annotated[
    TemplatesContext, Depends(request_context(require("templates:read", mfa=True), Templates))
]
ManageContext = Annotated[
    TemplatesContext, Depends(request_context(require("templates:manage", mfa=True), Templates))
]
Language = Annotated[
    str,
    Path(
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$",
        max_length=16,
        description="BCP 47 language tag, e.g. `en`, `es`, `pt-BR`.",
    ),
]
LocationQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=128,
        description="A location's template; without it, the organization's default.",
    ),
]


class TemplateIn(BaseModel):
    """A template's sources. SMS: `body` only; email: `subject` and `body`, optionally
    `html_body`; portal: `subject` and `body`."""

    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=5000)
    subject: str | None = Field(None, min_length=1, max_length=500)
    html_body: str | None = Field(None, min_length=1, max_length=20000)


class TemplateRead(BaseModel):
    kind: MessageKind
    channel: Channel
    language: str
    """The language asked for."""
    template_language: str
    """The language of the template used (a built-in falls back to English)."""
    location_id: str | None
    """Set when the location's own template is the one used."""
    source: Literal["location", "organization", "built_in"]
    built_in: bool
    version: int | None
    updated_by: str | None
    updated_at: datetime | None
    subject: str | None
    body: str
    html_body: str | None


class TemplatePage(BaseModel):
    items: list[TemplateRead]
    count: int


class TemplateVersionRead(BaseModel):
    version: int
    reverted: bool
    """True for a revert to the default (DELETE): it has no sources."""
    updated_by: str
    created_at: datetime
    subject: str | None
    body: str | None
    html_body: str | None


class TemplateVersionPage(BaseModel):
    kind: MessageKind
    channel: Channel
    language: str
    location_id: str | None
    items: list[TemplateVersionRead]
    count: int


class PreviewIn(BaseModel):
    """A draft to preview; without `body`, the template in effect is previewed."""

    model_config = ConfigDict(extra="forbid")

    body: str | None = Field(None, min_length=1, max_length=5000)
    subject: str | None = Field(None, min_length=1, max_length=500)
    html_body: str | None = Field(None, min_length=1, max_length=20000)
    sensitive_location: bool = Field(
        False, description="Preview as a sensitive location would send it (neutral sender)."
    )
    practice_name: str = Field(SAMPLE_PRACTICE, min_length=1, max_length=200)


class PreviewRead(BaseModel):
    channel: Channel
    sender_name: str
    subject: str | None
    body: str
    html_body: str | None
    characters: int
    """Length of the body (SMS: at most 320)."""


def _read(effective: EffectiveTemplate) -> TemplateRead:
    requested, template, version = effective.requested, effective.template, effective.version
    source: Literal["location", "organization", "built_in"]
    if template.key.organization_id is None:
        source = "built_in"
    elif template.key.location_id is not None:
        source = "location"
    else:
        source = "organization"
    return TemplateRead(
        kind=requested.kind,
        channel=requested.channel,
        language=requested.language,
        template_language=template.key.language,
        location_id=template.key.location_id,
        source=source,
        built_in=source == "built_in",
        version=version.version if version is not None else None,
        updated_by=version.updated_by if version is not None else None,
        updated_at=version.created_at if version is not None else None,
        subject=template.subject,
        body=template.body,
        html_body=template.html_body,
    )


class KeyPath(NamedTuple):
    """A template's key as the path and query name it (the organization is the caller's)."""

    kind: MessageKind
    channel: Channel
    language: str
    location_id: str | None

    def of(self, principal: AuthenticatedPrincipal) -> TemplateKey:
        return template_key(principal, *self)


def _key_path(
    kind: MessageKind, channel: Channel, language: Language, location_id: LocationQuery = None
) -> KeyPath:
    return KeyPath(kind, channel, language, location_id)


KeyPathDep = Annotated[KeyPath, Depends(_key_path)]


@router.get("", response_model=TemplatePage)
async def list_templates(ctx: ReadContext, location_id: LocationQuery = None) -> TemplatePage:
    """List the template in effect for every kind, channel and language, built-ins marked."""
    items = [_read(t) for t in await templates_in_effect(ctx, location_id)]
    return TemplatePage(items=items, count=len(items))


@router.get(KEY_PATH, response_model=TemplateRead)
async def read_template(path: KeyPathDep, ctx: ReadContext) -> TemplateRead:
    """Read the template in effect for one kind, channel and language."""
    return _read(await effective_template(ctx, path.of(ctx.principal)))


@router.get(KEY_PATH + "/versions", response_model=TemplateVersionPage)
async def list_template_versions(path: KeyPathDep, ctx: ReadContext) -> TemplateVersionPage:
    """List the saved versions of one template, newest first (reverts included)."""
    versions = await template_versions(ctx, path.of(ctx.principal))
    items = [
        TemplateVersionRead(
            version=v.version,
            reverted=v.deleted,
            updated_by=v.updated_by,
            created_at=v.created_at,
            subject=v.template.subject if v.template else None,
            body=v.template.body if v.template else None,
            html_body=v.template.html_body if v.template else None,
        )
        for v in versions
    ]
    return TemplateVersionPage(**path._asdict(), items=items, count=len(items))


@router.put(KEY_PATH, response_model=TemplateRead)
async def save_template(path: KeyPathDep, body: TemplateIn, ctx: ManageContext) -> TemplateRead:
    """Save a new version of a template after the PHI check (422 names what is refused)."""
    draft = Draft(body=body.body, subject=body.subject, html_body=body.html_body)
    return _read(await save_template_version(ctx, path.of(ctx.principal), draft))


@router.delete(KEY_PATH, status_code=204)
async def revert_template(path: KeyPathDep, ctx: ManageContext) -> Response:
    """Revert a template to the default (the organization's, else the built-in)."""
    await revert_to_default(ctx, path.of(ctx.principal))
    return Response(status_code=204)


@router.post(KEY_PATH + "/preview", response_model=PreviewRead)
async def preview_template(path: KeyPathDep, body: PreviewIn, ctx: ManageContext) -> PreviewRead:
    """Render a draft (or the template in effect) with invented, non-PHI sample values."""
    draft = (
        Draft(body=body.body, subject=body.subject, html_body=body.html_body)
        if body.body is not None
        else None
    )
    rendered = await render_preview(
        ctx,
        path.of(ctx.principal),
        draft,
        sensitive_location=body.sensitive_location,
        practice_name=body.practice_name,
    )
    # Rendered for the path's channel: the template (draft or in effect) is of that key.
    return PreviewRead(**asdict(rendered), characters=len(rendered.body))
