"""Composition root of the messaging service."""

from __future__ import annotations

import logging

import httpx
from fastapi import FastAPI

from careloop_kit.auth import JwksSource, ServiceTokenSource
from careloop_kit.clock import Clock
from careloop_kit.service import Runtime, ServiceSpec, create_service_app
from careloop_kit.settings import internal_verify
from careloop_messaging.api.inbox import router as inbox_router
from careloop_messaging.api.links import router as links_router
from careloop_messaging.api.templates import router as templates_router
from careloop_messaging.api.webhooks import router
from careloop_messaging.channels.email import SmtpEmailChannel
from careloop_messaging.channels.log import LogChannel
from careloop_messaging.channels.portal import PortalInboxChannel
from careloop_messaging.channels.sms import TwilioClient, TwilioSmsChannel
from careloop_messaging.domain.catalog import TemplateCatalog
from careloop_messaging.domain.channels import OutboundChannel
from careloop_messaging.domain.templates import Channel, TemplateRenderer
from careloop_messaging.handlers.delivery import delivery_worker
from careloop_messaging.handlers.reminders import REMINDERS_CONSUMER
from careloop_messaging.handlers.requests import (
    CAREGAP_OUTREACH_CONSUMER,
    REFERRAL_CONTACTS_CONSUMER,
)
from careloop_messaging.patients_client import ContactSource, HttpContactSource
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import SecureLinks, field_ciphers
from careloop_messaging.store.tables import metadata, platform
from careloop_messaging.usecases.context import (
    CIPHER_KEY,
    CONTACTS_KEY,
    DELIVERY_KEY,
    INBOX_CIPHER_KEY,
    LINKS_KEY,
    vault_keys,
)
from careloop_messaging.usecases.delivery import Delivery

SERVICE = "messaging"
log = logging.getLogger(__name__)


def _channels(
    settings: MessagingSettings, http: httpx.AsyncClient
) -> dict[Channel, OutboundChannel]:
    if settings.delivery_mode == "log":
        return {channel: LogChannel(channel) for channel in (Channel.SMS, Channel.EMAIL)}
    channels: dict[Channel, OutboundChannel] = {
        Channel.EMAIL: SmtpEmailChannel(settings.smtp_config(), settings.email_identity())
    }
    if settings.twilio_from_number or settings.twilio_messaging_service_sid:
        client = TwilioClient(
            http,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            base_url=settings.twilio_api_base,
        )
        channels[Channel.SMS] = TwilioSmsChannel(
            client,
            from_number=settings.twilio_from_number,
            messaging_service_sid=(
                None if settings.twilio_from_number else settings.twilio_messaging_service_sid
            ),
            status_callback_url=settings.twilio_status_callback_url,
        )
    return channels


def build_spec(
    settings: MessagingSettings, *, contacts: ContactSource | None = None
) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        # Patients and identity are Careloop services: their certificates chain to ours.
        http = httpx.AsyncClient(
            timeout=settings.patients_timeout_s, verify=internal_verify(settings)
        )
        runtime.state["http"] = http
        if contacts is None:
            tokens = ServiceTokenSource(
                runtime.vault, SERVICE, settings.identity_token_url, clock=runtime.clock, http=http
            )
            runtime.state[CONTACTS_KEY] = HttpContactSource(
                http, tokens, patients_url=settings.patients_url
            )
        else:
            runtime.state[CONTACTS_KEY] = contacts
        # Addresses and inbox items are sealed under data keys of messaging's transit key;
        # the recipient secret keys their blind index and opens what was sealed before the
        # port (it has no versions: only the current key counts).
        recipient_key, _ = await vault_keys(runtime.vault, settings.recipient_key_secret_path)
        cipher, inbox_cipher = field_ciphers(runtime.vault, recipient_key, clock=runtime.clock)
        runtime.state[INBOX_CIPHER_KEY] = inbox_cipher
        runtime.state[CIPHER_KEY] = cipher
        link_key, previous_link_keys = await vault_keys(
            runtime.vault, settings.link_key_secret_path
        )
        links = SecureLinks(link_key, settings.secure_link_base, previous=previous_link_keys)
        runtime.state[LINKS_KEY] = links
        catalog = TemplateCatalog(
            TemplateRenderer(neutral_sender_name=settings.neutral_sender_name)
        )
        runtime.state[DELIVERY_KEY] = Delivery(
            settings=settings,
            catalog=catalog,
            # The portal inbox is our own storage: it delivers in every delivery mode.
            channels={
                **_channels(settings, http),
                Channel.PORTAL: PortalInboxChannel(
                    runtime.sessionmaker, inbox_cipher, runtime.clock
                ),
            },
            cipher=cipher,
            links=links,
        )

    async def on_shutdown(runtime: Runtime) -> None:
        http: httpx.AsyncClient | None = runtime.state.get("http")
        if http is not None:
            await http.aclose()

    return ServiceSpec(
        name=SERVICE,
        description=(
            "Outbound patient messages (SMS, email) from reminder touches: PHI-safe "
            "templates, opt-outs, a per-patient contact budget, delivery tracking, and the "
            "secure one-time links in them (confirm, reschedule, cancel)."
        ),
        metadata=metadata,
        tables=platform,
        routers=[router, links_router, templates_router, inbox_router],
        verifies_tokens=True,
        consumers=[REMINDERS_CONSUMER, REFERRAL_CONTACTS_CONSUMER, CAREGAP_OUTREACH_CONSUMER],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        background=[delivery_worker],
    )


def create_app(
    settings: MessagingSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks: JwksSource | None = None,
    contacts: ContactSource | None = None,
) -> FastAPI:
    """The messaging service with its runtime lifespan.

    `contacts` replaces the patients service (service tests); `jwks` replaces identity's
    published keys (tests sign their own tokens for the template and inbox routes).
    """
    settings = settings or MessagingSettings()
    return create_service_app(
        build_spec(settings, contacts=contacts), settings, clock=clock, jwks=jwks
    )
