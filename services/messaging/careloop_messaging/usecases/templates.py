"""Message templates per organization and location: the template in effect, its saved
versions, saving (after the PHI check), reverting and previewing.

Templates hold no PHI, but they decide what patients are told, so every change is
audited (resource `MessageTemplate`, no PHI category). The organization default changes
every location's messages, so saving or reverting it needs every location in scope; a
location's template needs that location. Saves are versions: nothing is overwritten, and
a revert appends a version without sources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from careloop_kit.audit import AuditEntry
from careloop_kit.auth import ALL_LOCATIONS, AuthenticatedPrincipal
from careloop_kit.context import RequestContext
from careloop_kit.problems import Forbidden, NotFound, ProblemError
from careloop_kit.service import Runtime
from careloop_messaging.domain.catalog import TemplateCatalog, built_in, candidate_keys
from careloop_messaging.domain.defaults import BUILT_IN_TEMPLATES
from careloop_messaging.domain.outreach import local_date_and_time, offer_fields
from careloop_messaging.domain.templates import (
    ALLOWED_FILTERS,
    ALLOWED_TESTS,
    Channel,
    MessageKind,
    MessageTemplate,
    RenderedMessage,
    SenderProfile,
    TemplateKey,
    TemplatePart,
    TemplateRefused,
    TemplateRenderError,
    allowed_fields,
)
from careloop_messaging.store.repository import Templates, TemplateVersion
from careloop_messaging.usecases.context import settings_of
from careloop_messaging.usecases.delivery import REPLY_KEYWORDS, delivery_of

RESOURCE = "MessageTemplate"

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


TemplatesContext = RequestContext[Templates]


class TemplateRefusedProblem(ProblemError):
    status, title, slug = 422, "Template refused", "template-refused"


@dataclass(frozen=True)
class Draft:
    """A template's sources as an editor sent them."""

    body: str
    subject: str | None = None
    html_body: str | None = None


@dataclass(frozen=True)
class EffectiveTemplate:
    """The template used for a requested key: a location's, the organization's or the
    built-in (`version` None), in the requested or the fallback language."""

    requested: TemplateKey
    template: MessageTemplate
    version: TemplateVersion | None


def catalog_of(runtime: Runtime) -> TemplateCatalog:
    return delivery_of(runtime).catalog


def template_key(
    principal: AuthenticatedPrincipal,
    kind: MessageKind,
    channel: Channel,
    language: str,
    location_id: str | None,
) -> TemplateKey:
    """The key of a template of the principal's organization."""
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


def refusal(
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


def _checked(catalog: TemplateCatalog, key: TemplateKey, draft: Draft) -> MessageTemplate:
    template = MessageTemplate(
        key=key, body=draft.body, subject=draft.subject, html_body=draft.html_body
    )
    try:
        catalog.save(template, sensitive_location=SAVE_AS_SENSITIVE)
    except TemplateRefused as exc:
        raise refusal(catalog, template, sensitive=SAVE_AS_SENSITIVE, first=str(exc)) from exc
    return template


async def effective_template(ctx: TemplatesContext, requested: TemplateKey) -> EffectiveTemplate:
    """The template the delivery worker would use for this key (see `TemplateCatalog`)."""
    _check_read_scope(ctx.principal, requested.location_id)
    assert requested.organization_id is not None
    for key in candidate_keys(
        kind=requested.kind,
        channel=requested.channel,
        language=requested.language,
        organization_id=requested.organization_id,
        location_id=requested.location_id,
    ):
        latest = await ctx.repos.latest(key)
        if latest is not None and latest.template is not None:
            return EffectiveTemplate(requested, latest.template, latest)
    default = built_in(requested.kind, requested.channel, requested.language)
    if default is None:
        raise NotFound(
            f"No {requested.channel} template for {requested.kind} in {requested.language!r}."
        )
    return EffectiveTemplate(requested, default, None)


async def templates_in_effect(
    ctx: TemplatesContext, location_id: str | None
) -> list[EffectiveTemplate]:
    """The template in effect for every kind, channel and language (built-in or saved)."""
    principal = ctx.principal
    _check_read_scope(principal, location_id)
    saved = {
        (v.key.kind, v.key.channel, v.key.language, v.key.location_id): v
        for v in await ctx.repos.current_of_org(principal.org_id, location_id)
    }
    languages = sorted(
        {key.language for key in BUILT_IN_TEMPLATES} | {language for _, _, language, _ in saved}
    )
    items = []
    for kind in MessageKind:
        for channel in Channel:
            for language in languages:
                requested = template_key(principal, kind, channel, language, location_id)
                chosen: EffectiveTemplate | None = None
                for scope in (location_id, None) if location_id is not None else (None,):
                    version = saved.get((kind, channel, language, scope))
                    if version is not None and version.template is not None:
                        chosen = EffectiveTemplate(requested, version.template, version)
                        break
                if chosen is None:
                    default = built_in(kind, channel, language)
                    if default is None:
                        continue
                    chosen = EffectiveTemplate(requested, default, None)
                items.append(chosen)
    return items


async def template_versions(ctx: TemplatesContext, key: TemplateKey) -> list[TemplateVersion]:
    """The saved versions of one template, newest first (reverts included)."""
    _check_read_scope(ctx.principal, key.location_id)
    versions = await ctx.repos.versions(key)
    if not versions:
        raise NotFound("This template was never saved in this organization.")
    return versions


@asynccontextmanager
async def _changing(ctx: TemplatesContext, key: TemplateKey, action: str) -> AsyncIterator[None]:
    """An audited change of one template, by a principal who may write its scope."""
    entry = AuditEntry(
        action=action, resource_type=RESOURCE, phi_categories=[], resource_id=_resource_id(key)
    )
    async with ctx.audited(entry):
        _check_write_scope(ctx.principal, key.location_id)
        yield


async def save_template_version(
    ctx: TemplatesContext, key: TemplateKey, draft: Draft
) -> EffectiveTemplate:
    """A new version of a template, after the PHI check (`TemplateRefusedProblem`)."""
    async with _changing(ctx, key, "update"):
        template = _checked(catalog_of(ctx.runtime), key, draft)
        version = await ctx.repos.add_version(
            key, template, updated_by=ctx.principal.actor_id, now=ctx.runtime.clock.now()
        )
    return EffectiveTemplate(key, template, version)


async def revert_to_default(ctx: TemplatesContext, key: TemplateKey) -> None:
    """Revert a template to the default (the organization's, else the built-in)."""
    async with _changing(ctx, key, "delete"):
        latest = await ctx.repos.latest(key)
        if latest is None or latest.deleted:
            raise NotFound("No saved template to revert in this organization.")
        await ctx.repos.add_version(
            key, None, updated_by=ctx.principal.actor_id, now=ctx.runtime.clock.now()
        )


async def render_preview(
    ctx: TemplatesContext,
    key: TemplateKey,
    draft: Draft | None,
    *,
    sensitive_location: bool,
    practice_name: str,
) -> RenderedMessage:
    """Render a draft (or, without one, the template in effect) with invented, non-PHI
    sample values."""
    _check_read_scope(ctx.principal, key.location_id)
    catalog = catalog_of(ctx.runtime)
    if draft is not None:
        template = _checked(catalog, key, draft)
    else:
        template = await catalog.resolve(
            ctx.repos,
            kind=key.kind,
            channel=key.channel,
            language=key.language,
            organization_id=ctx.principal.org_id,
            location_id=key.location_id,
        )
    settings = settings_of(ctx.runtime)
    day, time = local_date_and_time(SAMPLE_START, SAMPLE_TIME_ZONE, template.key.language)
    fields = {
        "appointment_date": day,
        "appointment_time": time,
        "secure_link": f"{settings.secure_link_base.rstrip('/')}/sample-link",
        "reply_keywords": REPLY_KEYWORDS,
    }
    if key.kind is MessageKind.RESCHEDULE_OFFER:
        fields |= offer_fields(SAMPLE_OPTIONS, SAMPLE_TIME_ZONE, template.key.language)
    if key.channel is Channel.PORTAL:
        fields |= SAMPLE_PORTAL_FIELDS
    sender = SenderProfile(
        practice_name=practice_name,
        sensitive=sensitive_location,
        **({} if sensitive_location else SAMPLE_LOCATION),
    )
    try:
        return catalog.renderer.render(template, fields, sender=sender)
    except TemplateRefused as exc:
        raise refusal(catalog, template, sensitive=sensitive_location, first=str(exc)) from exc
    except TemplateRenderError as exc:
        raise TemplateRefusedProblem(
            f"The template cannot be rendered: {exc}",
            errors=[{"part": "template", "problem": str(exc)}],
        ) from exc
