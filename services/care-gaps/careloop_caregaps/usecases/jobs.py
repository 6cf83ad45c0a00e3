"""Population evaluation as a durable job. `start_evaluation` makes a queued job row
(the API answers 202 with it); every replica's worker loop takes unfinished jobs one
batch at a time under the job row's lock (`FOR UPDATE SKIP LOCKED`), evaluates the
next patients in id order from the job's cursor, and commits the batch's gap changes
with the job's progress (done, changed, cursor): a restart resumes after the last
committed batch, and no patient is evaluated twice by one job. Evaluation changes only
what differs, so running the job again reports `changed == 0` and sends no event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

from careloop_caregaps.store.jobs import Job
from careloop_caregaps.store.repository import Repositories, repositories
from careloop_caregaps.usecases.common import settings_of
from careloop_caregaps.usecases.evaluation import evaluate_patient
from careloop_kit.context import RequestContext
from careloop_kit.problems import NotFound
from careloop_kit.repository import new_id
from careloop_kit.service import Runtime

log = logging.getLogger(__name__)

Context = RequestContext[Repositories]


async def start_evaluation(ctx: Context, location_id: str | None) -> Job:
    """Queue an evaluation of the organization's patients (those attributed to
    `location_id` when given, which must be in the caller's scope)."""
    principal = ctx.principal
    if location_id is not None:
        principal.can_access_location(location_id)
    now = ctx.runtime.clock.now()
    job = await ctx.repos.jobs.add(
        new_id(),
        org_id=principal.org_id,
        location_id=location_id,
        as_of=now.date(),
        requested_by=principal.actor_id,
        now=now,
    )
    total = await ctx.repos.patients.count(principal.org_id, location_id)
    await ctx.repos.jobs.update(job.id, total=total)
    return replace(job, total=total)


async def read_evaluation(ctx: Context, job_id: str) -> Job:
    job = await ctx.repos.jobs.get(ctx.principal.org_id, job_id)
    if job is None:
        raise NotFound(f"No evaluation {job_id} in this organization.")
    return job


async def run_batch(runtime: Runtime) -> bool:
    """One batch of the oldest unfinished job no other replica is working on; False
    when there was none."""
    batch_size = settings_of(runtime).evaluation_batch_size
    async with runtime.sessionmaker() as session, session.begin():
        repos = repositories(session)
        job = await repos.jobs.claim()
        if job is None:
            return False
        now = runtime.clock.now()
        try:
            async with session.begin_nested():
                ids = await repos.patients.page_ids(
                    job.org_id, job.location_id, after=job.cursor, limit=batch_size
                )
                changed = 0
                for patient_id in ids:
                    changed += await evaluate_patient(
                        runtime, session, job.org_id, patient_id, as_of=job.as_of
                    )
        except Exception as exc:
            # The batch is rolled back; the job says it failed instead of retrying a
            # patient that fails the same way every time.
            log.exception("evaluation %s failed at cursor %s", job.id, job.cursor)
            await repos.jobs.update(
                job.id, status="failed", error=type(exc).__name__, finished_at=now
            )
            return True
        finished = len(ids) < batch_size
        await repos.jobs.update(
            job.id,
            status="done" if finished else "running",
            done=job.done + len(ids),
            changed=job.changed + changed,
            cursor=ids[-1] if ids else job.cursor,
            started_at=job.started_at or now,
            finished_at=now if finished else None,
        )
        if finished:
            log.info(
                "evaluation %s done: %s patients, %s changed",
                job.id,
                job.done + len(ids),
                job.changed + changed,
            )
    return True


async def evaluation_jobs(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background job: work evaluation batches until shutdown, looking for new jobs every
    `evaluation_poll_interval_s` when there is none."""
    interval = settings_of(runtime).evaluation_poll_interval_s
    while not stop.is_set():
        try:
            worked = await run_batch(runtime)
        except Exception:
            log.exception("evaluation worker: a batch failed to start, retrying")
            worked = False
        if worked:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
