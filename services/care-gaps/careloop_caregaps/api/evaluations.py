"""Population evaluations: start one (202, a durable job), follow its progress."""

from __future__ import annotations

from fastapi import APIRouter, status

from careloop_caregaps.api.common import ManageContext
from careloop_caregaps.api.schemas import EvaluationAccepted, EvaluationCreate, EvaluationRead
from careloop_caregaps.store.jobs import Job
from careloop_caregaps.usecases import jobs as steps
from careloop_kit.api_types import IdStr

router = APIRouter(prefix="/evaluations", tags=["evaluations"])


def _read(job: Job) -> EvaluationRead:
    return EvaluationRead(
        job_id=job.id,
        status=job.status,
        location_id=job.location_id,
        total=job.total,
        done=job.done,
        percent=job.percent,
        changed=job.changed,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=EvaluationAccepted)
async def start_evaluation(body: EvaluationCreate, ctx: ManageContext) -> EvaluationAccepted:
    """Evaluate every patient (of one location, when given) against every measure."""
    job = await steps.start_evaluation(ctx, body.location_id)
    return EvaluationAccepted(job_id=job.id, status_url=f"/evaluations/{job.id}")


@router.get("/{job_id}", response_model=EvaluationRead)
async def read_evaluation(job_id: IdStr, ctx: ManageContext) -> EvaluationRead:
    """Where the evaluation is: status, total, done, percent and gaps changed."""
    return _read(await steps.read_evaluation(ctx, job_id))
