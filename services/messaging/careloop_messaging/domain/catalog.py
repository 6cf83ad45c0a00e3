"""Which template applies: the most specific saved one, else a built-in default.

Storage is in memory for now (the template table comes with the service app); the
resolution order and the save-time check are the contract the table must keep.
"""

from __future__ import annotations

from careloop_messaging.domain.defaults import BUILT_IN_TEMPLATES, FALLBACK_LANGUAGE
from careloop_messaging.domain.templates import (
    Channel,
    MessageKind,
    MessageTemplate,
    TemplateKey,
    TemplateNotFound,
    TemplateRefused,
    TemplateRenderer,
)


class TemplateCatalog:
    """Saved templates per organization and location, over the built-in defaults."""

    def __init__(self, renderer: TemplateRenderer | None = None) -> None:
        self.renderer = renderer or TemplateRenderer()
        self._saved: dict[TemplateKey, MessageTemplate] = {}

    def save(self, template: MessageTemplate, *, sensitive_location: bool = False) -> None:
        """Check and store a template; raises :class:`TemplateRefused` if it could leak PHI.

        An organization default (no location) may end up serving a sensitive location,
        so it is always checked under the sensitive rules.
        """
        key = template.key
        if key.organization_id is None:
            raise TemplateRefused("built-in defaults are not saved; give an organization_id")
        sensitive = sensitive_location or key.location_id is None
        self.renderer.check(template, sensitive=sensitive)
        self._saved[key] = template

    def resolve(
        self,
        *,
        kind: MessageKind,
        channel: Channel,
        language: str,
        organization_id: str,
        location_id: str | None = None,
    ) -> MessageTemplate:
        """Most specific first: location, organization default, built-in, built-in English."""
        candidates = []
        if location_id is not None:
            candidates.append(TemplateKey(kind, channel, language, organization_id, location_id))
        candidates.append(TemplateKey(kind, channel, language, organization_id))
        for key in candidates:
            if key in self._saved:
                return self._saved[key]
        for lang in (language, FALLBACK_LANGUAGE):
            built_in = BUILT_IN_TEMPLATES.get(TemplateKey(kind, channel, lang))
            if built_in is not None:
                return built_in
        raise TemplateNotFound(f"no {channel} template for {kind} in {language!r}")
