"""PHI-safe message templates: what a template may say on each channel, checked twice.

SMS, email subjects and email bodies travel and rest outside our control (carrier logs,
lock screens, mail providers, shared inboxes), so templates for them may reference only
the fields in :data:`INSECURE_FIELDS` (reschedule offers also :data:`OFFER_FIELDS`, the
offered dates and times); an email subject only ``practice_name``. The portal inbox is
behind login, so its templates may also use :data:`PORTAL_EXTRA_FIELDS`.

The check runs when a template is saved (static analysis of the parsed Jinja2 AST: only
an allow-list of node types, filters and tests, no attribute or item access, no calls,
no include/import/extends) and again when it is rendered (the context may hold only the
allowed fields; an unexpected field is an error, never silently dropped, so a caller
that passes PHI finds out at once).

What this cannot catch: PHI typed into a template as literal text (say a patient's name
pasted by an administrator) is indistinguishable from any other wording. Template edits
need review and audit for that reason.

Sensitive locations (behavioral health): the location name and address are never in the
context, and ``practice_name`` and the sender name both become the neutral sender name,
because a practice's own name can reveal the kind of care ("Hope Behavioral Health").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

SMS_MAX_CHARS = 320
"""Two concatenated GSM-7 segments; longer bodies cost more and split badly on old phones."""

DEFAULT_NEUTRAL_SENDER_NAME = "Your care team"


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    PORTAL = "portal"


class MessageKind(StrEnum):
    CONFIRMATION = "confirmation"
    REMINDER = "reminder"
    RESCHEDULE_OFFER = "reschedule_offer"
    WAITLIST_OFFER = "waitlist_offer"
    """A freed time offered to a waitlisted patient (reply Y to take it)."""
    WAITLIST_CLOSED = "waitlist_closed"
    """The offered time went to someone else (or the answer came too late)."""
    REFERRAL_CONTACT = "referral_contact"
    """A referral is waiting to be booked: call us, or ask us to call (secure link)."""
    CHECKUP = "checkup"
    """A check-up is due (a care-gap outreach step): call us to book (secure link). Names
    no measure, test or condition."""


class TemplatePart(StrEnum):
    SUBJECT = "subject"
    BODY = "body"
    HTML_BODY = "html_body"


INSECURE_FIELDS = frozenset(
    {"practice_name", "appointment_date", "appointment_time", "secure_link", "reply_keywords"}
)
"""Fields an SMS body or an email body may use: nothing that identifies the patient or
the kind of care. Dates and times are pre-formatted strings chosen by the caller."""

OFFER_OPTIONS_SHOWN = 3
"""Options a reschedule offer lists (the event may carry up to 9): three numbered times
fit one 320-character SMS with the practice name, the link and the STOP/HELP wording."""

OFFER_FIELDS = frozenset(
    {"options", "option_numbers"}
    | {f"option_{n}_{part}" for n in range(1, OFFER_OPTIONS_SHOWN + 1) for part in ("date", "time")}
)
"""Extra insecure-channel fields of reschedule offers: the offered dates and times as
pre-formatted strings in the location's zone (``options`` lists them numbered,
``option_numbers`` reads "1, 2 or 3"). Times are not PHI; no provider, no visit type.
Only offer templates may use them: elsewhere they would never be filled in."""

SUBJECT_FIELDS = frozenset({"practice_name"})
"""Email subjects show in notifications and inbox lists: no appointment details at all."""

PORTAL_EXTRA_FIELDS = frozenset(
    {
        "patient_first_name",
        "provider_name",
        "visit_type",
        "preparation_instructions",
        "location_name",
        "location_address",
    }
)
"""Extra fields for the portal inbox, which the patient reads only after signing in."""

LOCATION_FIELDS = frozenset({"location_name", "location_address"})
"""Never available for a sensitive location, on any channel."""

RENDERER_FIELDS = frozenset({"practice_name", "location_name", "location_address"})
"""Filled in by the renderer from the sender profile, never by the caller."""

ALLOWED_FILTERS = frozenset({"upper", "lower", "capitalize", "title", "trim", "e", "escape"})
ALLOWED_TESTS = frozenset({"defined", "undefined", "none", "string"})

# Node types a template may contain. Everything else (For, Macro, Call, Getattr,
# Getitem, Include, Import, Extends, Assign, With, ...) is refused: an allow-list
# fails closed when Jinja2 grows a new construct.
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Const,
    nodes.Name,
    nodes.If,
    nodes.CondExpr,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Compare,
    nodes.Operand,
    nodes.Concat,
    nodes.Filter,
    nodes.Test,
)


class TemplateRefused(ValueError):
    """A template or a render context breaks the PHI rules; the message names the culprit."""


class TemplateRenderError(ValueError):
    """A valid template could not be rendered (missing value, SMS too long)."""


class TemplateNotFound(LookupError):
    """No template, not even a built-in default, for this kind, channel and language."""


@dataclass(frozen=True)
class TemplateKey:
    """Where a template applies. ``organization_id=None`` is a built-in default;
    ``location_id=None`` is the organization's default."""

    kind: MessageKind
    channel: Channel
    language: str
    organization_id: str | None = None
    location_id: str | None = None


@dataclass(frozen=True)
class MessageTemplate:
    """Template sources. SMS has only ``body``; email needs ``subject`` and may add
    ``html_body``; portal messages have a ``subject`` and a ``body``."""

    key: TemplateKey
    body: str
    subject: str | None = None
    html_body: str | None = None


@dataclass(frozen=True)
class SenderProfile:
    """Who a message is from, as far as the recipient can see."""

    practice_name: str
    location_name: str | None = None
    location_address: str | None = None
    sensitive: bool = False


@dataclass(frozen=True)
class RenderedMessage:
    channel: Channel
    sender_name: str
    body: str
    subject: str | None = None
    html_body: str | None = None


def allowed_fields(
    channel: Channel, part: TemplatePart, *, sensitive: bool, kind: MessageKind | None = None
) -> frozenset[str]:
    """The context names a template part of this kind may reference (``kind=None``: the
    fields every kind shares)."""
    if channel is Channel.PORTAL:
        fields = INSECURE_FIELDS | PORTAL_EXTRA_FIELDS
    elif part is TemplatePart.SUBJECT:
        fields = SUBJECT_FIELDS
    else:
        fields = INSECURE_FIELDS
    if kind is MessageKind.RESCHEDULE_OFFER and part is not TemplatePart.SUBJECT:
        fields |= OFFER_FIELDS
    return fields - LOCATION_FIELDS if sensitive else fields


def sender_name(sender: SenderProfile, *, neutral_sender_name: str) -> str:
    """The From display name: neutral for sensitive locations."""
    return neutral_sender_name if sender.sensitive else sender.practice_name


def _environment(*, autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=False
    )
    # Calls are refused statically anyway; dropping the globals means a template that
    # slipped past the check still finds no range(), lipsum() or namespace() to use.
    env.globals.clear()
    return env


TEMPLATE_CACHE_SIZE = 512
"""Distinct template sources (and check verdicts) a renderer keeps compiled."""


class TemplateRenderer:
    """Checks and renders templates under the PHI rules."""

    def __init__(self, *, neutral_sender_name: str = DEFAULT_NEUTRAL_SENDER_NAME) -> None:
        self.neutral_sender_name = neutral_sender_name
        self._text = _environment(autoescape=False)
        self._html = _environment(autoescape=True)
        # Templates are immutable values, so the check's verdict and the compiled form
        # of a source can be kept: the delivery worker renders the same few templates
        # for every message, and parsing them each time was most of its CPU per message.
        # A refusal raises and so is never cached: it is found again on every render.
        self._passed = lru_cache(maxsize=TEMPLATE_CACHE_SIZE)(self._check_uncached)
        self._compile_text = lru_cache(maxsize=TEMPLATE_CACHE_SIZE)(self._text.from_string)
        self._compile_html = lru_cache(maxsize=TEMPLATE_CACHE_SIZE)(self._html.from_string)

    def check(self, template: MessageTemplate, *, sensitive: bool) -> None:
        """Refuse a template that could leak PHI (run when a template is saved, and
        again before every render)."""
        self._passed(template, sensitive)

    def _check_uncached(self, template: MessageTemplate, sensitive: bool) -> None:
        channel = template.key.channel
        if channel is Channel.SMS and (template.subject is not None or template.html_body):
            raise TemplateRefused("an SMS template has only a body (no subject, no HTML)")
        if channel is not Channel.SMS and template.subject is None:
            raise TemplateRefused(f"a {channel} template needs a subject")
        if channel is not Channel.EMAIL and template.html_body is not None:
            raise TemplateRefused("only email templates have an HTML body")
        for part, source in self._parts(template):
            self._check_source(source, template.key, part, sensitive=sensitive)

    def render(
        self,
        template: MessageTemplate,
        fields: Mapping[str, str],
        *,
        sender: SenderProfile,
    ) -> RenderedMessage:
        """Render with only the allowed fields; anything else in ``fields`` is an error."""
        channel = template.key.channel
        self.check(template, sensitive=sender.sensitive)
        context = self._context(template.key, fields, sender)
        rendered: dict[TemplatePart, str] = {}
        for part, source in self._parts(template):
            allowed = allowed_fields(
                channel, part, sensitive=sender.sensitive, kind=template.key.kind
            )
            part_context = {k: v for k, v in context.items() if k in allowed}
            compile_source = (
                self._compile_html if part is TemplatePart.HTML_BODY else self._compile_text
            )
            try:
                rendered[part] = compile_source(source).render(part_context).strip()
            except TemplateError as exc:
                raise TemplateRenderError(f"{channel} {part}: {exc.message}") from exc
        body = rendered[TemplatePart.BODY]
        if channel is Channel.SMS and len(body) > SMS_MAX_CHARS:
            raise TemplateRenderError(
                f"SMS body is {len(body)} characters; the limit is {SMS_MAX_CHARS}"
            )
        return RenderedMessage(
            channel=channel,
            sender_name=sender_name(sender, neutral_sender_name=self.neutral_sender_name),
            body=body,
            subject=rendered.get(TemplatePart.SUBJECT),
            html_body=rendered.get(TemplatePart.HTML_BODY),
        )

    def _context(
        self, key: TemplateKey, fields: Mapping[str, str], sender: SenderProfile
    ) -> dict[str, str]:
        # Filtering happens against the widest set the channel allows; each part is then
        # narrowed again (a subject sees only practice_name).
        channel = key.channel
        widest = allowed_fields(
            channel, TemplatePart.BODY, sensitive=sender.sensitive, kind=key.kind
        )
        for name in sorted(fields):
            if name in RENDERER_FIELDS:
                raise TemplateRefused(
                    f"field {name!r} comes from the sender profile, not the caller"
                )
            if name not in widest:
                raise TemplateRefused(
                    f"field {name!r} is not allowed in a {channel} message"
                    + (" for a sensitive location" if sender.sensitive else "")
                )
        context = dict(fields)
        if sender.sensitive:
            context["practice_name"] = self.neutral_sender_name
        else:
            context["practice_name"] = sender.practice_name
            if channel is Channel.PORTAL:
                for name, value in (
                    ("location_name", sender.location_name),
                    ("location_address", sender.location_address),
                ):
                    if value is not None:
                        context[name] = value
        return context

    @staticmethod
    def _parts(template: MessageTemplate) -> Iterable[tuple[TemplatePart, str]]:
        yield TemplatePart.BODY, template.body
        if template.subject is not None:
            yield TemplatePart.SUBJECT, template.subject
        if template.html_body is not None:
            yield TemplatePart.HTML_BODY, template.html_body

    def _check_source(
        self, source: str, key: TemplateKey, part: TemplatePart, *, sensitive: bool
    ) -> None:
        channel = key.channel
        where = f"{channel} {part}"
        env = self._html if part is TemplatePart.HTML_BODY else self._text
        try:
            ast = env.parse(source)
        except TemplateError as exc:
            raise TemplateRefused(f"{where}: not a valid template: {exc.message}") from exc
        for node in ast.find_all(nodes.Node):
            _check_node(node, where)
        allowed = allowed_fields(channel, part, sensitive=sensitive, kind=key.kind)
        for name in sorted(meta.find_undeclared_variables(ast)):
            if name not in allowed:
                sensitive_only = sensitive and name in LOCATION_FIELDS
                suffix = " for a sensitive location" if sensitive_only else ""
                raise TemplateRefused(f"{where}: field {name!r} is not allowed{suffix}")


def _check_node(node: nodes.Node, where: str) -> None:
    line = f" (line {node.lineno})" if getattr(node, "lineno", None) else ""
    if not isinstance(node, _ALLOWED_NODES):
        raise TemplateRefused(f"{where}: construct {_describe(node)} is not allowed{line}")
    if isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
        raise TemplateRefused(f"{where}: filter {node.name!r} is not allowed{line}")
    if isinstance(node, nodes.Test) and node.name not in ALLOWED_TESTS:
        raise TemplateRefused(f"{where}: test {node.name!r} is not allowed{line}")
    if isinstance(node, nodes.Name) and node.ctx != "load":
        raise TemplateRefused(f"{where}: assigning to {node.name!r} is not allowed{line}")


_NODE_NAMES: dict[type[nodes.Node], str] = {
    nodes.Getattr: "attribute access (x.y)",
    nodes.Getitem: "item access (x[y])",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Extends: "{% extends %}",
    nodes.Call: "a function call",
    nodes.For: "{% for %}",
    nodes.Macro: "{% macro %}",
    nodes.Assign: "{% set %}",
    nodes.AssignBlock: "{% set %}",
}


def _describe(node: nodes.Node) -> str:
    for kind, name in _NODE_NAMES.items():
        if isinstance(node, kind):
            return name
    return type(node).__name__
