"""`careloop caregaps evaluate`: start a population evaluation through the gateway and
follow it to its end.

The command speaks to the public API only (`/api/v1/caregaps/...`) with the caller's own
access token, so it needs nothing but the gateway's address: the service checks
`caregaps:manage` and audits the job like any other request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

EVALUATIONS_PATH = "/api/v1/caregaps/evaluations"
FINISHED = frozenset({"done", "failed"})


class EvaluationError(Exception):
    """The evaluation could not be started or followed, or it failed; the message says
    which, in words an operator can act on."""


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    status: str
    total: int | None
    done: int
    changed: int | None
    body: dict[str, Any]

    @classmethod
    def of(cls, body: dict[str, Any]) -> JobStatus:
        total = body.get("total")
        changed = body.get("changed")
        return cls(
            job_id=str(body.get("job_id", "")),
            status=str(body.get("status", "")),
            total=int(total) if total is not None else None,
            done=int(body.get("done") or 0),
            changed=int(changed) if changed is not None else None,
            body=body,
        )


def _problem(response: httpx.Response, what: str) -> EvaluationError:
    """An RFC 9457 answer in one line: its title and detail, else the status."""
    detail = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = ": ".join(str(body[key]) for key in ("title", "detail") if body.get(key))
    hint = ""
    if response.status_code == 401:
        hint = " (the access token is missing, expired or not accepted)"
    elif response.status_code == 403:
        hint = " (the token's user needs caregaps:manage at the location)"
    return EvaluationError(
        f"{what}: HTTP {response.status_code}{hint}" + (f" {detail}" if detail else "")
    )


def start_evaluation(client: httpx.Client, location_id: str | None) -> str:
    """POST the job; its id. The Idempotency-Key lets the gateway answer a retried POST
    with the first answer instead of starting a second job."""
    body: dict[str, Any] = {} if location_id is None else {"location_id": location_id}
    try:
        response = client.post(
            EVALUATIONS_PATH, json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
    except httpx.HTTPError as exc:
        raise EvaluationError(f"could not reach the gateway: {type(exc).__name__}") from exc
    if response.status_code != 202:
        raise _problem(response, "starting the evaluation failed")
    job_id = response.json().get("job_id")
    if not job_id:
        raise EvaluationError("the gateway accepted the evaluation but named no job id")
    return str(job_id)


def job_status(client: httpx.Client, job_id: str) -> JobStatus:
    """One look at the job (the gateway's path, whatever `status_url` the service gave)."""
    try:
        response = client.get(f"{EVALUATIONS_PATH}/{job_id}")
    except httpx.HTTPError as exc:
        raise EvaluationError(f"could not reach the gateway: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise _problem(response, f"reading evaluation {job_id} failed")
    return JobStatus.of(response.json())


def follow_evaluation(
    client: httpx.Client,
    job_id: str,
    *,
    on_status: Callable[[JobStatus], None],
    poll_interval_s: float = 1.0,
    timeout_s: float = 3600.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobStatus:
    """Poll until the job is done; raises EvaluationError when it failed or outlasted
    timeout_s (the job itself goes on: the message says how to look at it again)."""
    deadline = clock() + timeout_s
    while True:
        status = job_status(client, job_id)
        on_status(status)
        if status.status == "failed":
            of = f" after {status.done} of {status.total} patients" if status.total else ""
            error = status.body.get("error")
            cause = f": {error}" if error else "; the service's logs name the cause"
            raise EvaluationError(f"evaluation {job_id} failed{of}{cause}")
        if status.status in FINISHED:
            return status
        if clock() >= deadline:
            raise EvaluationError(
                f"evaluation {job_id} still {status.status} after {timeout_s:.0f} s; it goes "
                f"on in the service: GET {EVALUATIONS_PATH}/{job_id}"
            )
        sleep(poll_interval_s)
