"""Which template applies: the most specific saved one, else a built-in default.

Saved templates live in the messaging database (`store.repository.Templates`); this
module keeps the rules and reads them through the :class:`SavedTemplates` port, so the
resolution order and the save-time check stay pure and testable without I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

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


class SavedTemplates(Protocol):
    """The current saved template of one key (organization and location set), if any."""

    async def current(self, key: TemplateKey) -> MessageTemplate | None: ...


def built_in(kind: MessageKind, channel: Channel, language: str) -> MessageTemplate | None:
    """The built-in default in this language, else in English, else None."""
    for lang in (language, FALLBACK_LANGUAGE):
        found = BUILT_IN_TEMPLATES.get(TemplateKey(kind, channel, lang))
        if found is not None:
            return found
    return None


def candidate_keys(
    *,
    kind: MessageKind,
    channel: Channel,
    language: str,
    organization_id: str,
    location_id: str | None = None,
) -> Iterator[TemplateKey]:
    """Saved keys to try, most specific first: the location's, then the organization's."""
    if location_id is not None:
        yield TemplateKey(kind, channel, language, organization_id, location_id)
    yield TemplateKey(kind, channel, language, organization_id)


class TemplateCatalog:
    """Saved templates per organization and location, over the built-in defaults."""

    def __init__(self, renderer: TemplateRenderer | None = None) -> None:
        self.renderer = renderer or TemplateRenderer()

    def save(self, template: MessageTemplate, *, sensitive_location: bool = False) -> None:
        """The save-time check: raises :class:`TemplateRefused` if the template could
        leak PHI. Run before a template is stored; storing is the repository's.

        An organization default (no location) may end up serving a sensitive location,
        so it is always checked under the sensitive rules.
        """
        key = template.key
        if key.organization_id is None:
            raise TemplateRefused("built-in defaults are not saved; give an organization_id")
        sensitive = sensitive_location or key.location_id is None
        self.renderer.check(template, sensitive=sensitive)

    async def resolve(
        self,
        saved: SavedTemplates,
        *,
        kind: MessageKind,
        channel: Channel,
        language: str,
        organization_id: str,
        location_id: str | None = None,
    ) -> MessageTemplate:
        """Most specific first: location, organization default, built-in, built-in English.

        The renderer checks the result again when it renders it, under the rules of the
        message's location (a saved template is never trusted because it was checked
        once).
        """
        for key in candidate_keys(
            kind=kind,
            channel=channel,
            language=language,
            organization_id=organization_id,
            location_id=location_id,
        ):
            found = await saved.current(key)
            if found is not None:
                return found
        default = built_in(kind, channel, language)
        if default is None:
            raise TemplateNotFound(f"no {channel} template for {kind} in {language!r}")
        return default
