"""`careloop caregaps evaluate` against a small HTTP server that answers like the gateway
in front of the care-gaps service: a job that advances on each look, one that fails,
and refusals the command must explain."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from careloop_cli.main import app

runner = CliRunner()
TOKEN = "test-access-token"


@dataclass
class Gateway:
    """What the fake gateway's jobs do, and what it was asked."""

    url: str = ""
    outcome: str = "done"
    total: int = 4
    posts: list[dict[str, Any]] = field(default_factory=list)
    idempotency_keys: list[str] = field(default_factory=list)
    looks: int = 0


def _handler(state: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any], content_type: str) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return True
            self._answer(
                401,
                {"type": "about:blank", "title": "Unauthorized", "status": 401},
                "application/problem+json",
            )
            return False

        def do_POST(self) -> None:
            if not self._authorized():
                return
            assert self.path == "/api/v1/caregaps/evaluations"
            length = int(self.headers.get("Content-Length") or 0)
            state.posts.append(json.loads(self.rfile.read(length) or b"{}"))
            state.idempotency_keys.append(self.headers.get("Idempotency-Key", ""))
            self._answer(
                202,
                {"job_id": "job-1", "status_url": "/evaluations/job-1"},
                "application/json",
            )

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path != "/api/v1/caregaps/evaluations/job-1":
                self._answer(
                    404,
                    {"title": "Not Found", "status": 404, "detail": "no such job"},
                    "application/problem+json",
                )
                return
            state.looks += 1
            done = min(state.looks - 1, state.total)
            finished = done == state.total or (state.outcome == "failed" and done == 2)
            status = (state.outcome if finished else "running") if state.looks > 1 else "queued"
            self._answer(
                200,
                {
                    "job_id": "job-1",
                    "status": status,
                    "total": state.total,
                    "done": done,
                    "percent": round(100 * done / state.total),
                    "started_at": "2026-01-05T10:00:00Z",
                    "finished_at": "2026-01-05T10:00:04Z" if finished else None,
                    "changed": 3,
                    "error": "synthetic failure in batch 2" if status == "failed" else None,
                },
                "application/json",
            )

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    state = Gateway()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def evaluate(gateway: Gateway, *extra: str, token: str | None = TOKEN) -> Any:
    env = {"CARELOOP_ACCESS_TOKEN": token} if token else {"CARELOOP_ACCESS_TOKEN": ""}
    return runner.invoke(
        app,
        ["caregaps", "evaluate", "--gateway", gateway.url, "--poll-interval", "0.01", *extra],
        env=env,
    )


def said(result: Any) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_the_bar_follows_the_job_to_done(gateway: Gateway) -> None:
    result = evaluate(gateway, "--location", "loc-1")

    assert result.exit_code == 0, result.output
    assert gateway.posts == [{"location_id": "loc-1"}]
    assert gateway.idempotency_keys[0]
    assert "care gaps: evaluation job-1 done" in said(result)
    assert "100%" in said(result)
    assert "evaluation job-1 done: 4 of 4 patients, 3 gap(s) changed" in said(result)


def test_without_a_location_the_whole_organization_is_evaluated(gateway: Gateway) -> None:
    assert evaluate(gateway).exit_code == 0
    assert gateway.posts == [{}]


def test_a_failed_job_exits_one_and_says_so(gateway: Gateway) -> None:
    gateway.outcome = "failed"

    result = evaluate(gateway)

    assert result.exit_code == 1
    assert "evaluation job-1 failed after 2 of 4 patients: synthetic failure in batch 2" in said(
        result
    )


def test_a_refused_token_is_explained(gateway: Gateway) -> None:
    result = evaluate(gateway, "--token", "not-the-token")

    assert result.exit_code == 1
    assert "starting the evaluation failed: HTTP 401" in said(result)
    assert "access token is missing, expired or not accepted" in said(result)
    assert gateway.posts == []


def test_no_token_is_refused_before_any_request(gateway: Gateway) -> None:
    result = evaluate(gateway, token=None)

    assert result.exit_code == 2
    assert "CARELOOP_ACCESS_TOKEN" in said(result)
    assert gateway.posts == []


def test_an_unreachable_gateway_is_named(gateway: Gateway) -> None:
    gateway.url = "http://127.0.0.1:9"

    result = evaluate(gateway)

    assert result.exit_code == 1
    assert "could not reach the gateway" in said(result)


def test_a_job_that_outlasts_the_timeout_is_left_running_and_named(gateway: Gateway) -> None:
    gateway.total = 10_000

    result = evaluate(gateway, "--timeout", "0.05")

    assert result.exit_code == 1
    assert "still running after 0 s" in said(result)
    assert "GET /api/v1/caregaps/evaluations/job-1" in said(result)
