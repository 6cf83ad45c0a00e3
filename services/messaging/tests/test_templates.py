"""PHI-safe templates: what is refused when saved, what is refused when rendered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from careloop_messaging.domain.catalog import TemplateCatalog
from careloop_messaging.domain.defaults import BUILT_IN_TEMPLATES
from careloop_messaging.domain.outreach import offer_fields
from careloop_messaging.domain.templates import (
    DEFAULT_NEUTRAL_SENDER_NAME,
    SMS_MAX_CHARS,
    Channel,
    MessageKind,
    MessageTemplate,
    SenderProfile,
    TemplateKey,
    TemplateNotFound,
    TemplateRefused,
    TemplateRenderer,
    TemplateRenderError,
)

pytestmark = pytest.mark.unit

FIELDS = {
    "appointment_date": "Tuesday, March 3",
    "appointment_time": "9:15 AM",
    "secure_link": "https://care.example.org/m/Zx81Qp",
}
PRACTICE = SenderProfile(practice_name="Lakeside Family Clinic", location_name="North Campus")
SENSITIVE = SenderProfile(
    practice_name="Hope Behavioral Health", location_name="Hope Recovery Center", sensitive=True
)


def org_id() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


def sms(
    body: str,
    org: str | None = None,
    location: str | None = None,
    kind: MessageKind = MessageKind.REMINDER,
) -> MessageTemplate:
    key = TemplateKey(kind, Channel.SMS, "en", org or org_id(), location)
    return MessageTemplate(key=key, body=body)


OFFER_FIELDS = {
    "options": "1) Wed Mar 5 at 9:00 AM; 2) Thu Mar 6 at 2:30 PM; 3) Fri Mar 7 at 8:15 AM",
    "option_numbers": "1, 2 or 3",
    **{f"option_{n}_date": f"Wed Mar {n + 4}" for n in (1, 2, 3)},
    **{f"option_{n}_time": "10:45 AM" for n in (1, 2, 3)},
}


def email(
    subject: str, body: str = "See {{ secure_link }}", html: str | None = None
) -> MessageTemplate:
    key = TemplateKey(MessageKind.REMINDER, Channel.EMAIL, "en", org_id())
    return MessageTemplate(key=key, subject=subject, body=body, html_body=html)


def portal(body: str, location: str | None = "loc-1") -> MessageTemplate:
    key = TemplateKey(MessageKind.REMINDER, Channel.PORTAL, "en", org_id(), location)
    return MessageTemplate(key=key, subject="From {{ practice_name }}", body=body)


class TestSaveTimeRefusal:
    @pytest.mark.parametrize(
        ("source", "named"),
        [
            ("Hi {{ patient_name }}", "'patient_name'"),
            ("{{ appointment.provider }}", "attribute access"),
            ("{{ appointment['provider'] }}", "item access"),
            ("{{ secure_link|urlencode }}", "filter 'urlencode'"),
            ("{{ secure_link|attr('x') }}", "filter 'attr'"),
            ("{% if secure_link is sameas secure_link %}x{% endif %}", "test 'sameas'"),
            ("{% include 'other.txt' %}", "{% include %}"),
            ("{% import 'macros.txt' as m %}", "{% import %}"),
            ("{% from 'macros.txt' import x %}", "{% from ... import %}"),
            ("{% extends 'base.txt' %}", "{% extends %}"),
            ("{{ range(3) }}", "a function call"),
            ("{% for c in secure_link %}{{ c }}{% endfor %}", "{% for %}"),
            ("{% set x = secure_link %}{{ x }}", "{% set %}"),
            ("{% macro m() %}x{% endmacro %}", "{% macro %}"),
            ("{{ ''.__class__ }}", "attribute access"),
            ("{{ practice_name", "not a valid template"),
        ],
    )
    def test_each_forbidden_construct_is_refused_by_name(self, source: str, named: str) -> None:
        with pytest.raises(TemplateRefused) as refused:
            TemplateCatalog().save(sms(source))
        assert named in str(refused.value)

    def test_allowed_fields_filters_and_conditions_are_accepted(self) -> None:
        catalog = TemplateCatalog()
        template = sms(
            "{{ practice_name|upper }}: {{ appointment_date }} {{ appointment_time|trim }}"
            "{% if reply_keywords is defined %} {{ reply_keywords }}{% endif %} {{ secure_link }}"
        )
        catalog.save(template)
        rendered = catalog.renderer.render(template, FIELDS, sender=PRACTICE)
        assert rendered.body.startswith("LAKESIDE FAMILY CLINIC: Tuesday, March 3 9:15 AM")

    def test_email_subject_may_use_only_the_practice_name(self) -> None:
        TemplateCatalog().save(email("Reminder from {{ practice_name }}"))
        for field in ("appointment_date", "appointment_time", "secure_link"):
            with pytest.raises(TemplateRefused, match=f"email subject: field '{field}'"):
                TemplateCatalog().save(email(f"Reminder for {{{{ {field} }}}}"))

    def test_email_html_body_follows_the_insecure_rules(self) -> None:
        with pytest.raises(TemplateRefused, match="email html_body: field 'provider_name'"):
            TemplateCatalog().save(email("Hi", html="<p>{{ provider_name }}</p>"))

    def test_portal_may_use_its_extra_fields_but_sms_may_not(self) -> None:
        body = "{{ patient_first_name }}, see {{ provider_name }} for {{ visit_type }}"
        TemplateCatalog().save(portal(body))
        with pytest.raises(TemplateRefused, match="'patient_first_name'"):
            TemplateCatalog().save(sms(body))

    def test_location_name_is_refused_for_a_sensitive_location(self) -> None:
        TemplateCatalog().save(portal("At {{ location_name }}"), sensitive_location=False)
        with pytest.raises(TemplateRefused, match="'location_name' is not allowed for a sensitive"):
            TemplateCatalog().save(portal("At {{ location_name }}"), sensitive_location=True)

    def test_an_organization_default_is_checked_as_if_sensitive(self) -> None:
        # It may serve a behavioral-health location of the same organization.
        with pytest.raises(TemplateRefused, match="'location_name'"):
            TemplateCatalog().save(portal("At {{ location_name }}", location=None))

    def test_an_sms_template_has_no_subject(self) -> None:
        key = TemplateKey(MessageKind.REMINDER, Channel.SMS, "en", org_id())
        with pytest.raises(TemplateRefused, match="only a body"):
            TemplateCatalog().save(MessageTemplate(key=key, body="x", subject="y"))

    def test_every_built_in_default_passes_the_strictest_check(self) -> None:
        renderer = TemplateRenderer()
        for template in BUILT_IN_TEMPLATES.values():
            renderer.check(template, sensitive=True)


class TestOfferFields:
    def test_an_offer_template_may_list_the_numbered_options(self) -> None:
        template = sms(
            "{{ practice_name }}: {{ options }}. Reply {{ option_numbers }}."
            "{% if option_3_date is defined %} Or {{ option_3_date }} {{ option_3_time }}"
            "{% endif %}",
            kind=MessageKind.RESCHEDULE_OFFER,
        )
        TemplateCatalog().save(template)
        rendered = TemplateRenderer().render(template, OFFER_FIELDS, sender=PRACTICE)
        assert rendered.body.startswith("Lakeside Family Clinic: 1) Wed Mar 5 at 9:00 AM;")
        assert rendered.body.endswith("Reply 1, 2 or 3. Or Wed Mar 7 10:45 AM")

    @pytest.mark.parametrize(
        "field", ["provider_name", "visit_type", "patient_first_name", "option_4_date"]
    )
    def test_an_offer_template_with_a_forbidden_field_is_refused(self, field: str) -> None:
        template = sms(f"{{{{ options }}}} {{{{ {field} }}}}", kind=MessageKind.RESCHEDULE_OFFER)
        with pytest.raises(TemplateRefused, match=f"sms body: field '{field}' is not allowed"):
            TemplateCatalog().save(template)

    def test_the_option_fields_belong_to_offers_only(self) -> None:
        with pytest.raises(TemplateRefused, match="field 'options' is not allowed"):
            TemplateCatalog().save(sms("{{ options }}"))
        with pytest.raises(TemplateRefused, match="field 'options' is not allowed in a sms"):
            TemplateRenderer().render(
                BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.SMS, "en")],
                {**FIELDS, "options": OFFER_FIELDS["options"]},
                sender=PRACTICE,
            )

    def test_an_offer_email_subject_names_no_time(self) -> None:
        key = TemplateKey(MessageKind.RESCHEDULE_OFFER, Channel.EMAIL, "en", org_id())
        template = MessageTemplate(key=key, subject="Times: {{ options }}", body="{{ options }}")
        with pytest.raises(TemplateRefused, match="email subject: field 'options'"):
            TemplateCatalog().save(template)

    def test_a_missing_option_is_an_error_not_a_blank(self) -> None:
        template = sms("{{ option_3_date }}", kind=MessageKind.RESCHEDULE_OFFER)
        fields = {k: v for k, v in OFFER_FIELDS.items() if not k.startswith("option_3")}
        with pytest.raises(TemplateRenderError, match="option_3_date"):
            TemplateRenderer().render(template, fields, sender=PRACTICE)


class TestRenderTime:
    def test_an_unexpected_field_is_an_error_not_dropped(self) -> None:
        template = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.SMS, "en")]
        with pytest.raises(TemplateRefused, match="field 'patient_name' is not allowed"):
            TemplateRenderer().render(
                template, {**FIELDS, "patient_name": "Ann Example"}, sender=PRACTICE
            )

    def test_the_caller_cannot_supply_the_practice_or_location_name(self) -> None:
        template = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.SMS, "en")]
        for name in ("practice_name", "location_name"):
            with pytest.raises(TemplateRefused, match="sender profile"):
                TemplateRenderer().render(template, {**FIELDS, name: "x"}, sender=PRACTICE)

    def test_portal_extra_fields_are_refused_for_insecure_channels(self) -> None:
        template = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.EMAIL, "en")]
        with pytest.raises(TemplateRefused, match="'provider_name' is not allowed in a email"):
            TemplateRenderer().render(
                template, {**FIELDS, "provider_name": "Dr. X"}, sender=PRACTICE
            )

    def test_a_missing_field_is_an_error(self) -> None:
        template = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.SMS, "en")]
        fields = {k: v for k, v in FIELDS.items() if k != "secure_link"}
        with pytest.raises(TemplateRenderError, match="secure_link"):
            TemplateRenderer().render(template, fields, sender=PRACTICE)

    def test_a_template_stored_unchecked_is_still_refused_when_rendered(self) -> None:
        # A template row edited behind the catalog's back never reaches a patient.
        bad = sms("Hi {{ patient_name }}")
        with pytest.raises(TemplateRefused, match="'patient_name'"):
            TemplateRenderer().render(bad, FIELDS, sender=PRACTICE)

    def test_an_sms_longer_than_the_limit_is_refused(self) -> None:
        long_link = "https://care.example.org/m/" + "x" * SMS_MAX_CHARS
        template = sms("{{ secure_link }}")
        with pytest.raises(TemplateRenderError, match="limit is 320"):
            TemplateRenderer().render(template, {"secure_link": long_link}, sender=PRACTICE)

    def test_html_parts_are_autoescaped_and_text_parts_are_not(self) -> None:
        template = email("From {{ practice_name }}", "{{ practice_name }}", "{{ practice_name }}")
        sender = SenderProfile(practice_name="Smith & <Jones>")
        rendered = TemplateRenderer().render(template, {}, sender=sender)
        assert rendered.html_body == "Smith &amp; &lt;Jones&gt;"
        assert rendered.body == "Smith & <Jones>"
        assert rendered.subject == "From Smith & <Jones>"


class TestSensitiveLocations:
    def test_the_sender_and_practice_name_are_neutral(self) -> None:
        template = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.EMAIL, "en")]
        rendered = TemplateRenderer().render(template, FIELDS, sender=SENSITIVE)
        assert rendered.sender_name == DEFAULT_NEUTRAL_SENDER_NAME
        for part in (rendered.subject, rendered.body, rendered.html_body):
            assert part is not None
            assert "Hope" not in part
            assert DEFAULT_NEUTRAL_SENDER_NAME in part

    def test_the_neutral_name_is_configurable(self) -> None:
        template = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.SMS, "en")]
        renderer = TemplateRenderer(neutral_sender_name="Care Services")
        rendered = renderer.render(template, FIELDS, sender=SENSITIVE)
        assert rendered.sender_name == "Care Services"
        assert rendered.body.startswith("Care Services:")

    def test_the_location_name_never_reaches_a_portal_template(self) -> None:
        template = portal("{{ practice_name }} {{ secure_link }}")
        rendered = TemplateRenderer().render(template, FIELDS, sender=SENSITIVE)
        assert "Recovery" not in rendered.body
        with pytest.raises(TemplateRefused, match="sensitive location"):
            TemplateRenderer().render(portal("At {{ location_name }}"), {}, sender=SENSITIVE)

    def test_an_ordinary_location_is_named_in_the_portal(self) -> None:
        rendered = TemplateRenderer().render(portal("At {{ location_name }}"), {}, sender=PRACTICE)
        assert rendered.body == "At North Campus"
        assert rendered.sender_name == "Lakeside Family Clinic"


class FakeSavedTemplates:
    """The catalog's storage port over a dict: resolution is pure logic, tested here
    without a database (the table-backed store is covered by test_templates_api.py)."""

    def __init__(self) -> None:
        self.saved: dict[TemplateKey, MessageTemplate] = {}

    def put(self, catalog: TemplateCatalog, template: MessageTemplate) -> None:
        catalog.save(template)
        self.saved[template.key] = template

    async def current(self, key: TemplateKey) -> MessageTemplate | None:
        return self.saved.get(key)


class TestResolution:
    async def resolve(
        self, saved: FakeSavedTemplates, org: str, language: str = "en"
    ) -> MessageTemplate:
        return await TemplateCatalog().resolve(
            saved,
            kind=MessageKind.REMINDER,
            channel=Channel.SMS,
            language=language,
            organization_id=org,
            location_id="loc-7",
        )

    async def test_most_specific_then_organization_default_then_built_in(self) -> None:
        catalog, saved = TemplateCatalog(), FakeSavedTemplates()
        org = org_id()
        built_in = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.REMINDER, Channel.SMS, "en")]
        assert await self.resolve(saved, org) == built_in

        org_default = sms("{{ practice_name }} default {{ secure_link }}", org=org)
        saved.put(catalog, org_default)
        assert await self.resolve(saved, org) == org_default

        specific = sms("{{ practice_name }} loc-7 {{ secure_link }}", org=org, location="loc-7")
        saved.put(catalog, specific)
        assert await self.resolve(saved, org) == specific
        # Another organization still gets the built-in default.
        assert await self.resolve(saved, org_id()) == built_in

    async def test_language_falls_back_to_the_built_in_spanish_then_english(self) -> None:
        saved = FakeSavedTemplates()
        spanish = await self.resolve(saved, org_id(), language="es")
        assert spanish.key.language == "es"
        assert (await self.resolve(saved, org_id(), language="vi")).key.language == "en"

    async def test_a_kind_without_any_template_is_not_found(self) -> None:
        with pytest.raises(TemplateNotFound):
            await TemplateCatalog().resolve(
                FakeSavedTemplates(),
                kind="nonexistent",  # type: ignore[arg-type]
                channel=Channel.SMS,
                language="en",
                organization_id=org_id(),
            )


class TestDefaults:
    @pytest.mark.parametrize("language", ["en", "es"])
    @pytest.mark.parametrize("kind", list(MessageKind))
    def test_every_default_renders_and_sms_fits(self, kind: MessageKind, language: str) -> None:
        # Long but plausible values: a 40-character practice name and link.
        sender = SenderProfile(practice_name="Riverside Family Medicine & Pediatrics")
        fields = {
            "appointment_date": "Wednesday, September 30",
            "appointment_time": "10:45 AM",
            "secure_link": "https://care.example.org/m/AbCdEfGhIjKl",
        }
        offer = kind is MessageKind.RESCHEDULE_OFFER
        if offer:
            # Three offered times in their longest English and Spanish forms.
            fields |= offer_fields(
                [datetime(2031, 9, 24 + n, 14, 45, tzinfo=UTC) for n in range(3)],
                "America/New_York",
                language,
            )
        renderer = TemplateRenderer()
        for channel in Channel:
            template = BUILT_IN_TEMPLATES[TemplateKey(kind, channel, language)]
            rendered = renderer.render(template, fields, sender=sender)
            assert fields["secure_link"] in rendered.body
            if offer:
                assert fields["options"] in rendered.body
        sms_body = renderer.render(
            BUILT_IN_TEMPLATES[TemplateKey(kind, Channel.SMS, language)], fields, sender=sender
        ).body
        assert len(sms_body) <= SMS_MAX_CHARS
        assert "STOP" in sms_body
        assert "HELP" in sms_body
        if offer:
            assert " 1, 2 or 3 " in sms_body or " 1, 2 o 3 " in sms_body
        elif kind is MessageKind.WAITLIST_OFFER:
            assert " Y " in sms_body
        elif kind in (MessageKind.REFERRAL_CONTACT, MessageKind.CHECKUP):
            # No reply keyword answers it: the link (or a call) is the way to book.
            assert " C " not in sms_body
            assert " R " not in sms_body
        elif kind is not MessageKind.WAITLIST_CLOSED:
            assert " C " in sms_body
            assert " R " in sms_body
