"""Stage clocks per organization and location: read what applies where, and set a
level's own. A change applies to the clocks started after it (each stage a referral
enters from then on); a clock already running keeps the deadline it was started with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from careloop_kit.auth import ALL_LOCATIONS
from careloop_kit.problems import Forbidden
from careloop_referrals.domain.clocks import (
    WAITING_STAGES,
    ClockLayer,
    InvalidClock,
    StageClock,
    checked_layer,
    clock_for,
    clock_source,
)
from careloop_referrals.domain.referral import Stage, Urgency
from careloop_referrals.usecases.common import InvalidReferral
from careloop_referrals.usecases.referrals import Context

SOURCES = ("organization", "location")


@dataclass(frozen=True)
class EffectiveClock:
    urgency: Urgency
    stage: Stage
    clock: StageClock
    source: str
    """`default`, `organization` or `location`: the level the clock comes from."""


def _check_scope(ctx: Context, location_id: str | None) -> None:
    principal = ctx.principal
    if principal.is_patient:
        raise Forbidden("Stage clocks are for staff.")
    if location_id is None:
        if ALL_LOCATIONS not in principal.locations:
            raise Forbidden(
                "The organization's clocks are set by staff of every location; set this "
                "location's own with `location_id`."
            )
    else:
        principal.can_access_location(location_id)


async def effective_clocks(ctx: Context, location_id: str | None) -> list[EffectiveClock]:
    """Every waiting stage's clock per urgency at the location (None: the organization's
    own), and the level it comes from."""
    _check_scope(ctx, location_id)
    org, location = await ctx.repos.clock_settings.layers(ctx.principal.org_id, location_id or "")
    layers: tuple[ClockLayer, ...] = (org,) if location_id is None else (org, location)
    found = []
    for urgency in Urgency:
        for stage in Stage:
            if stage not in WAITING_STAGES:
                continue
            clock = clock_for(urgency, stage, *layers)
            assert clock is not None  # every waiting stage has a default
            index = clock_source(urgency, stage, *layers)
            source = "default" if index < 0 else SOURCES[index]
            found.append(EffectiveClock(urgency, stage, clock, source))
    return found


async def set_clocks(
    ctx: Context, location_id: str | None, layer: Mapping[tuple[Urgency, Stage], StageClock]
) -> list[EffectiveClock]:
    """Make `layer` the level's own clocks (what it leaves out inherits); the clocks
    that now apply there."""
    _check_scope(ctx, location_id)
    try:
        checked = checked_layer(layer)
    except InvalidClock as exc:
        raise InvalidReferral(str(exc)) from exc
    await ctx.repos.clock_settings.replace(
        ctx.principal.org_id,
        location_id,
        checked,
        actor=ctx.principal.actor_id,
        now=ctx.runtime.clock.now(),
    )
    return await effective_clocks(ctx, location_id)
