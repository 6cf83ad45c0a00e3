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

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from careloop_kit.audit import AuditEntry, recorder_of, request_meta
from careloop_kit.auth import ALL_LOCATIONS, AuthenticatedPrincipal, require
from careloop_kit.problems import Forbidden, NotFound, ProblemError
from careloop_kit.service import Runtime, RuntimeDep, SessionDep
from careloop_messaging.domain.catalog import TemplateCatalog, built_in, candidate_keys
from careloop_messaging.domain.defaults import BUILT_IN_TEMPLATES
from careloop_messaging.domain.outreach import local_date_and_time, offer_fields
from careloop_messaging.domain.templates import (
    ALLOWED_FILTERS,
    ALLOWED_TESTS,
    Channel,
    MessageKind,
    MessageTemplate,
    SenderProfile,
    TemplateKey,
    TemplatePart,
    TemplateRefused,
    TemplateRenderError,
    allowed_fields,
)
from careloop_messaging.handlers.delivery import REPLY_KEYWORDS, Delivery
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import Templates, TemplateVersion

router = APIRouter(prefix="/templates", tags=["templates"])

RESOURCE = "MessageTemplate"
KEY_PATH = "/{kind}/{channel}/{language}"

Reader = Annotated[AuthenticatedPrincipal, Depends(require("templates:read", mfa=True))]
Manager = Annotated[AuthenticatedPrincipal, Depends(require("templates:manage", mfa=True))]
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

# Saved templates are checked as if their location were sensitive: messaging does not
# know yet which locations are (identity owns them) and fills in no location name or
# address, so a template using one could only fail later, when a patient is waiting.
SAVE_AS_SENSITIVE = True

SAMPLE_START = datetime(2031, 3, 4, 14, 30, tzinfo=UTC)
SAMPLE_OPTIONS = (
    datetime(2031, 3, 5, 14, 0, tzinfo=UTC),
    datetime(2031, 3, 6, 19, 30, tzinfo=UTC),
    datetime(2031, 3, 7, 13, 15, tzinfo=UTC),
)
SAMPLE_TIME_ZONE = "America/New_York"
SAMPLE_PRACTICE = "Sample Family Practice"
# Invented values for the portal's extra fields: a preview never shows real patient data.
SAMPLE_PORTAL_FIELDS = {
    "patient_first_name": "Alex",
    "provider_name": "Dr. Sample",
    "visit_type": "Follow-up visit",
    "preparation_instructions": "Bring your medication list.",
}
SAMPLE_LOCATION = {"location_name": "Sample Clinic North", "location_address": "1 Sample Street"}


class TemplateRefusedProblem(ProblemError):
    status, title, slug = 422, "Template refused", "template-refused"


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


def _catalog(runtime: Runtime) -> TemplateCatalog:
    delivery: Delivery = runtime.state["delivery"]
    return delivery.catalog


def _key(
    principal: AuthenticatedPrincipal,
    kind: MessageKind,
    channel: Channel,
    language: str,
    location_id: str | None,
) -> TemplateKey:
    return TemplateKey(kind, channel, language, principal.org_id, location_id)


def _resource_id(key: TemplateKey) -> str:
    scope = key.location_id or "organization"
    return f"{scope}:{key.kind}:{key.channel}:{key.language}"


def _check_read_scope(principal: AuthenticatedPrincipal, location_id: str | None) -> None:
    if location_id is not None:
        principal.can_access_location(location_id)


def _check_write_scope(principal: AuthenticatedPrincipal, location_id: str | None) -> None:
    if location_id is None and ALL_LOCATIONS not in principal.locations:
        raise Forbidden("The organization's default template needs every location in scope.")
    if location_id is not None:
        principal.can_access_location(location_id)


def _refusal(
    catalog: TemplateCatalog, template: MessageTemplate, *, sensitive: bool, first: str
) -> TemplateRefusedProblem:
    """A 422 naming each part's first problem and what each part may use.

    The check stops at the first problem of a template; each part is checked alone
    (the others replaced by plain text) so an editor sees every broken part at once.
    """
    key = template.key
    errors: list[dict[str, str]] = []
    placeholder = "text"
    shape = MessageTemplate(
        key=key,
        body=placeholder,
        subject=template.subject and placeholder,
        html_body=template.html_body and placeholder,
    )
    try:
        catalog.save(shape, sensitive_location=sensitive)
    except TemplateRefused as exc:
        # The parts do not fit the channel (an SMS with a subject, an email without one).
        return TemplateRefusedProblem(
            f"The template does not fit its channel: {exc}",
            errors=[{"part": "template", "problem": str(exc)}],
        )
    for part, source in (
        (TemplatePart.BODY, template.body),
        (TemplatePart.SUBJECT, template.subject),
        (TemplatePart.HTML_BODY, template.html_body),
    ):
        if source is None:
            continue
        alone = MessageTemplate(
            key=key,
            body=source if part is TemplatePart.BODY else placeholder,
            subject=(
                source if part is TemplatePart.SUBJECT else (template.subject and placeholder)
            ),
            html_body=source if part is TemplatePart.HTML_BODY else None,
        )
        try:
            catalog.save(alone, sensitive_location=sensitive)
        except TemplateRefused as exc:
            errors.append({"part": part.value, "problem": str(exc)})
    if not errors:
        errors.append({"part": "template", "problem": first})
    parts = [TemplatePart.BODY]
    if key.channel is not Channel.SMS:
        parts.append(TemplatePart.SUBJECT)
    if key.channel is Channel.EMAIL:
        parts.append(TemplatePart.HTML_BODY)
    allowed = {
        part.value: sorted(allowed_fields(key.channel, part, sensitive=sensitive, kind=key.kind))
        for part in parts
    }
    return TemplateRefusedProblem(
        f"The template could leak PHI or uses what templates may not: {first}",
        errors=errors,
        allowed_fields=allowed,
        allowed_filters=sorted(ALLOWED_FILTERS),
        allowed_tests=sorted(ALLOWED_TESTS),
        allowed_constructs=[
            "{{ field }}",
            "{% if %} / {% elif %} / {% else %}",
            "x if c else y",
            "comparisons, and / or / not",
            "~ (concatenation)",
        ],
    )


def _checked(
    catalog: TemplateCatalog, key: TemplateKey, body: TemplateIn | PreviewIn, *, sensitive: bool
) -> MessageTemplate:
    template = MessageTemplate(
        key=key, body=body.body or "", subject=body.subject, html_body=body.html_body
    )
    try:
        catalog.save(template, sensitive_location=sensitive)
    except TemplateRefused as exc:
        raise _refusal(catalog, template, sensitive=sensitive, first=str(exc)) from exc
    return template


def _read(
    requested: TemplateKey,
    template: MessageTemplate,
    version: TemplateVersion | None,
) -> TemplateRead:
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


async def _effective(repo: Templates, requested: TemplateKey) -> TemplateRead:
    """The template the delivery worker would use for this key (see `TemplateCatalog`)."""
    assert requested.organization_id is not None
    for key in candidate_keys(
        kind=requested.kind,
        channel=requested.channel,
        language=requested.language,
        organization_id=requested.organization_id,
        location_id=requested.location_id,
    ):
        latest = await repo.latest(key)
        if latest is not None and latest.template is not None:
            return _read(requested, latest.template, latest)
    default = built_in(requested.kind, requested.channel, requested.language)
    if default is None:
        raise NotFound(
            f"No {requested.channel} template for {requested.kind} in {requested.language!r}."
        )
    return _read(requested, default, None)


@router.get("", response_model=TemplatePage)
async def list_templates(
    principal: Reader,
    session: SessionDep,
    location_id: LocationQuery = None,
) -> TemplatePage:
    """List the template in effect for every kind, channel and language, built-ins marked."""
    _check_read_scope(principal, location_id)
    repo = Templates(session)
    saved = {
        (v.key.kind, v.key.channel, v.key.language, v.key.location_id): v
        for v in await repo.current_of_org(principal.org_id, location_id)
    }
    languages = sorted(
        {key.language for key in BUILT_IN_TEMPLATES} | {language for _, _, language, _ in saved}
    )
    items = []
    for kind in MessageKind:
        for channel in Channel:
            for language in languages:
                requested = _key(principal, kind, channel, language, location_id)
                chosen: TemplateRead | None = None
                for scope in (location_id, None) if location_id is not None else (None,):
                    version = saved.get((kind, channel, language, scope))
                    if version is not None and version.template is not None:
                        chosen = _read(requested, version.template, version)
                        break
                if chosen is None:
                    default = built_in(kind, channel, language)
                    if default is None:
                        continue
                    chosen = _read(requested, default, None)
                items.append(chosen)
    return TemplatePage(items=items, count=len(items))


@router.get(KEY_PATH, response_model=TemplateRead)
async def read_template(
    kind: MessageKind,
    channel: Channel,
    language: Language,
    principal: Reader,
    session: SessionDep,
    location_id: LocationQuery = None,
) -> TemplateRead:
    """Read the template in effect for one kind, channel and language."""
    _check_read_scope(principal, location_id)
    return await _effective(
        Templates(session), _key(principal, kind, channel, language, location_id)
    )


@router.get(KEY_PATH + "/versions", response_model=TemplateVersionPage)
async def list_template_versions(
    kind: MessageKind,
    channel: Channel,
    language: Language,
    principal: Reader,
    session: SessionDep,
    location_id: LocationQuery = None,
) -> TemplateVersionPage:
    """List the saved versions of one template, newest first (reverts included)."""
    _check_read_scope(principal, location_id)
    key = _key(principal, kind, channel, language, location_id)
    versions = await Templates(session).versions(key)
    if not versions:
        raise NotFound("This template was never saved in this organization.")
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
    return TemplateVersionPage(
        kind=kind,
        channel=channel,
        language=language,
        location_id=location_id,
        items=items,
        count=len(items),
    )


@router.put(KEY_PATH, response_model=TemplateRead)
async def save_template(
    kind: MessageKind,
    channel: Channel,
    language: Language,
    body: TemplateIn,
    request: Request,
    principal: Manager,
    runtime: RuntimeDep,
    session: SessionDep,
    location_id: LocationQuery = None,
) -> TemplateRead:
    """Save a new version of a template after the PHI check (422 names what is refused)."""
    key = _key(principal, kind, channel, language, location_id)
    entry = AuditEntry(
        action="update", resource_type=RESOURCE, phi_categories=[], resource_id=_resource_id(key)
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        _check_write_scope(principal, location_id)
        template = _checked(_catalog(runtime), key, body, sensitive=SAVE_AS_SENSITIVE)
        version = await Templates(session).add_version(
            key, template, updated_by=principal.actor_id, now=runtime.clock.now()
        )
    return _read(key, template, version)


@router.delete(KEY_PATH, status_code=204)
async def revert_template(
    kind: MessageKind,
    channel: Channel,
    language: Language,
    request: Request,
    principal: Manager,
    runtime: RuntimeDep,
    session: SessionDep,
    location_id: LocationQuery = None,
) -> Response:
    """Revert a template to the default (the organization's, else the built-in)."""
    key = _key(principal, kind, channel, language, location_id)
    entry = AuditEntry(
        action="delete", resource_type=RESOURCE, phi_categories=[], resource_id=_resource_id(key)
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        _check_write_scope(principal, location_id)
        repo = Templates(session)
        latest = await repo.latest(key)
        if latest is None or latest.deleted:
            raise NotFound("No saved template to revert in this organization.")
        await repo.add_version(key, None, updated_by=principal.actor_id, now=runtime.clock.now())
    return Response(status_code=204)


@router.post(KEY_PATH + "/preview", response_model=PreviewRead)
async def preview_template(
    kind: MessageKind,
    channel: Channel,
    language: Language,
    body: PreviewIn,
    principal: Manager,
    runtime: RuntimeDep,
    session: SessionDep,
    location_id: LocationQuery = None,
) -> PreviewRead:
    """Render a draft (or the template in effect) with invented, non-PHI sample values."""
    _check_read_scope(principal, location_id)
    catalog = _catalog(runtime)
    key = _key(principal, kind, channel, language, location_id)
    if body.body is not None:
        template = _checked(catalog, key, body, sensitive=SAVE_AS_SENSITIVE)
    else:
        template = await catalog.resolve(
            Templates(session),
            kind=kind,
            channel=channel,
            language=language,
            organization_id=principal.org_id,
            location_id=location_id,
        )
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)
    day, time = local_date_and_time(SAMPLE_START, SAMPLE_TIME_ZONE, template.key.language)
    fields = {
        "appointment_date": day,
        "appointment_time": time,
        "secure_link": f"{settings.secure_link_base.rstrip('/')}/sample-link",
        "reply_keywords": REPLY_KEYWORDS,
    }
    if kind is MessageKind.RESCHEDULE_OFFER:
        fields |= offer_fields(SAMPLE_OPTIONS, SAMPLE_TIME_ZONE, template.key.language)
    if channel is Channel.PORTAL:
        fields |= SAMPLE_PORTAL_FIELDS
    sender = SenderProfile(
        practice_name=body.practice_name,
        sensitive=body.sensitive_location,
        **({} if body.sensitive_location else SAMPLE_LOCATION),
    )
    try:
        rendered = catalog.renderer.render(template, fields, sender=sender)
    except TemplateRefused as exc:
        raise _refusal(
            catalog, template, sensitive=body.sensitive_location, first=str(exc)
        ) from exc
    except TemplateRenderError as exc:
        raise TemplateRefusedProblem(
            f"The template cannot be rendered: {exc}",
            errors=[{"part": "template", "problem": str(exc)}],
        ) from exc
    return PreviewRead(
        channel=channel,
        sender_name=rendered.sender_name,
        subject=rendered.subject,
        body=rendered.body,
        html_body=rendered.html_body,
        characters=len(rendered.body),
    )
