"""serving.bench against a small OpenAI-compatible SSE server on 127.0.0.1 whose timing is known: it
streams a set number of tokens with set delays, and fails or hangs on request, so the client's
arithmetic, error counting and time bound are checked against real HTTP streams."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from serving.bench import (
    TIME_LIMIT,
    LoadResult,
    RequestResult,
    arrival_offsets,
    build_prompt,
    completions_url,
    run_load,
)

REPO = Path(__file__).resolve().parents[2]


def _unused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


DOWN_URL = _unused_url()
# Timing slack for a loaded 2-core machine: measured latencies never undercut the server's delays,
# and exceed them by less than this.
SLACK_S = 0.25


@dataclass
class StubBehaviour:
    """What the stub server does with the next requests."""

    first_delay_s: float = 0.0
    token_delay_s: float = 0.0
    statuses: list[int] = field(default_factory=list)  # consumed one per request; empty means 200
    malformed: list[bool] = field(default_factory=list)  # consumed one per request: stream a JSON array chunk
    hang: bool = False
    usage: bool = True
    api_key: str | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: list[float] = field(default_factory=list)


def _stub_app(behaviour: StubBehaviour) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> StreamingResponse | JSONResponse:
        behaviour.arrivals.append(time.perf_counter())
        if behaviour.api_key and request.headers.get("authorization") != f"Bearer {behaviour.api_key}":
            return JSONResponse({"error": {"message": "invalid API key", "type": "auth"}}, status_code=401)
        body = await request.json()
        behaviour.bodies.append(body)
        status = behaviour.statuses.pop(0) if behaviour.statuses else 200
        if status != 200:
            return JSONResponse({"error": {"message": "stub failure", "code": status}}, status_code=status)
        malformed = behaviour.malformed.pop(0) if behaviour.malformed else False
        return StreamingResponse(_events(behaviour, body, malformed), media_type="text/event-stream")

    return app


async def _events(behaviour: StubBehaviour, body: dict[str, Any], malformed: bool) -> AsyncIterator[str]:
    behaviour.in_flight += 1
    behaviour.max_in_flight = max(behaviour.max_in_flight, behaviour.in_flight)
    try:
        if behaviour.hang:
            await asyncio.sleep(30)
        await asyncio.sleep(behaviour.first_delay_s)
        if malformed:
            yield "data: [1, 2]\n\n"
        tokens = int(body["max_tokens"])
        for i in range(tokens):
            if i:
                await asyncio.sleep(behaviour.token_delay_s)
            chunk = {
                "object": "text_completion",
                "choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n"
        if behaviour.usage:
            usage = {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": tokens}
            yield f"data: {json.dumps({'object': 'text_completion', 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        behaviour.in_flight -= 1


@dataclass
class Stub:
    url: str
    behaviour: StubBehaviour


@pytest.fixture
def stub() -> Iterator[Stub]:
    behaviour = StubBehaviour()
    config = uvicorn.Config(_stub_app(behaviour), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the stub server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Stub(f"http://127.0.0.1:{port}", behaviour)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _load(stub: Stub, **overrides: Any) -> LoadResult:
    arguments: dict[str, Any] = {
        "model": "stub-model",
        "concurrency": 2,
        "requests": 4,
        "input_len": 16,
        "output_len": 5,
    }
    return asyncio.run(run_load(stub.url, **(arguments | overrides)))


# --- pure arithmetic --------------------------------------------------------------------------------


def test_metrics_follow_vllm_definitions_exactly() -> None:
    results = [
        RequestResult(ok=True, ttft=0.1, latency=0.5, itl=[0.1, 0.1, 0.2], prompt_tokens=10, output_tokens=5),
        RequestResult(ok=True, ttft=0.3, latency=0.3, itl=[], prompt_tokens=10, output_tokens=1),
        RequestResult(ok=False, error="HTTP 500"),
        RequestResult(ok=False, error="HTTP 429"),
        RequestResult(ok=False, error="HTTP 429"),
    ]
    result = LoadResult(
        concurrency=4, requests=6, input_len=10, output_len=5, rate=None, duration_s=2.0, results=results
    )
    d = result.to_dict()

    assert (d["completed"], d["errors"], d["not_sent"]) == (2, 3, 1)
    assert d["error_kinds"] == {"HTTP 500": 1, "HTTP 429": 2}
    assert d["request_throughput"] == pytest.approx(1.0)  # 2 completed in 2 s
    assert d["output_throughput"] == pytest.approx(3.0)  # 6 output tokens in 2 s
    assert (d["prompt_tokens"], d["output_tokens"]) == (20, 6)
    assert d["ttft"]["mean"] == pytest.approx(200.0)
    assert d["ttft"]["p50"] == pytest.approx(200.0)
    assert d["ttft"]["p90"] == pytest.approx(float(np.percentile([100.0, 300.0], 90)))
    # TPOT = (E2EL - TTFT) / (output tokens - 1), only for requests with more than one token.
    assert d["tpot"] == {"mean": pytest.approx(100.0), "p50": pytest.approx(100.0),
                         "p90": pytest.approx(100.0), "p99": pytest.approx(100.0)}  # fmt: skip
    # ITL pools every gap of every request.
    assert d["itl"]["mean"] == pytest.approx(400.0 / 3)
    assert d["itl"]["p50"] == pytest.approx(100.0)
    assert d["e2el"]["p99"] == pytest.approx(float(np.percentile([500.0, 300.0], 99)))
    # Goodput: completed requests meeting every SLO, per second.
    assert result.goodput({"ttft": 150}) == pytest.approx(0.5)
    assert result.goodput({"ttft": 500, "tpot": 50}) == pytest.approx(0.5)  # the 1-token request counts 0 TPOT
    assert result.goodput({"e2el": 1000}) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"goodput SLO \['itl'\] unknown"):
        result.goodput({"itl": 10})


def test_no_completed_request_gives_no_latency_figures() -> None:
    result = LoadResult(1, 1, 8, 8, None, 1.0, [RequestResult(ok=False, error="HTTP 500")])
    d = result.to_dict()
    assert d["ttft"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert (d["completed"], d["errors"], d["request_throughput"]) == (0, 1, 0.0)


def test_prompts_are_deterministic_distinct_and_sized() -> None:
    assert build_prompt(32, 0) == build_prompt(32, 0)
    assert build_prompt(32, 0) != build_prompt(32, 1)
    assert len(build_prompt(32, 7).split()) == 32


def test_arrivals_are_all_at_once_or_a_seeded_poisson_process() -> None:
    assert arrival_offsets(3, None) == [0.0, 0.0, 0.0]
    offsets = arrival_offsets(2000, 10.0)
    assert offsets == arrival_offsets(2000, 10.0)
    assert offsets[0] == 0.0
    assert np.mean(np.diff(offsets)) == pytest.approx(0.1, rel=0.1)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1", "http://h/v1/"]
)
def test_the_completions_url_accepts_a_base_url_with_or_without_v1(url: str) -> None:
    assert completions_url(url).endswith("/v1/completions")
    assert "/v1/v1" not in completions_url(url)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("concurrency", 0, "concurrency must be >= 1 (got 0)"),
        ("requests", 0, "requests must be >= 1 (got 0)"),
        ("rate", -1.0, "rate must be > 0 requests/s (got -1.0)"),
        ("timeout_s", 0.0, "timeout_s must be > 0 (got 0.0)"),
    ],
)
def test_run_load_rejects_bad_arguments_naming_them(name: str, value: Any, message: str) -> None:
    arguments: dict[str, Any] = {
        "model": "m",
        "concurrency": 1,
        "requests": 1,
        "input_len": 1,
        "output_len": 1,
    }
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        asyncio.run(run_load(DOWN_URL, **(arguments | {name: value})))


# --- against the stub server ------------------------------------------------------------------------


def test_the_load_generator_freezes_its_heap_before_measuring(stub: Stub) -> None:
    gc.unfreeze()
    _load(stub, requests=1, concurrency=1)
    assert gc.get_freeze_count() > 0  # its own garbage collection never pauses the streams it measures


def test_streamed_requests_are_measured_from_the_wire(stub: Stub) -> None:
    stub.behaviour.first_delay_s = 0.3
    stub.behaviour.token_delay_s = 0.05
    result = _load(stub, concurrency=2, requests=4, input_len=16, output_len=5)
    d = result.to_dict()

    assert (d["completed"], d["errors"]) == (4, 0)
    assert (d["prompt_tokens"], d["output_tokens"]) == (4 * 16, 4 * 5)
    for r in result.results:
        assert len(r.itl) == 4  # 5 tokens, 4 gaps
        assert 0.3 <= r.ttft < 0.3 + SLACK_S
        # One gap can come out short when the chunk before it was delayed; their sum cannot.
        assert all(0 < gap < 0.05 + SLACK_S for gap in r.itl)
        assert 0.5 <= r.latency < 0.5 + SLACK_S
        assert r.latency == pytest.approx(r.ttft + sum(r.itl))
        assert r.tpot == pytest.approx(sum(r.itl) / 4)
    # Two waves of two requests, each about 0.3 + 4 * 0.05 = 0.5 s.
    assert 1.0 <= d["duration_s"] < 1.0 + 2 * SLACK_S
    assert d["request_throughput"] == pytest.approx(4 / d["duration_s"])
    assert stub.behaviour.max_in_flight == 2


def test_a_rate_spaces_the_requests_as_a_poisson_process(stub: Stub) -> None:
    result = _load(stub, concurrency=8, requests=6, output_len=2, rate=10.0)
    assert result.completed == 6
    expected = arrival_offsets(6, 10.0)
    arrivals = sorted(stub.behaviour.arrivals)
    for offset, arrival in zip(expected, arrivals, strict=True):
        assert offset - 0.05 <= arrival - arrivals[0] < offset + SLACK_S


def test_every_request_asks_for_an_exact_streamed_length(stub: Stub) -> None:
    stub.behaviour.api_key = "sk-test"
    result = _load(stub, api_key="sk-test", requests=3, input_len=12, output_len=7)
    assert result.completed == 3
    for body in stub.behaviour.bodies:
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        assert body["ignore_eos"] is True
        assert body["max_tokens"] == 7
        assert body["model"] == "stub-model"
        assert len(body["prompt"].split()) == 12


def test_without_usage_each_text_chunk_counts_as_a_token(stub: Stub) -> None:
    stub.behaviour.usage = False
    result = _load(stub, requests=2, output_len=6)
    assert [(r.output_tokens, r.prompt_tokens) for r in result.results] == [(6, 0), (6, 0)]


def test_http_errors_are_counted_by_status(stub: Stub) -> None:
    stub.behaviour.statuses = [200, 500, 429, 200, 429, 200]
    result = _load(stub, concurrency=1, requests=6)
    assert (result.completed, result.errors) == (3, 3)
    assert result.error_kinds == {"HTTP 500": 1, "HTTP 429": 2}
    assert result.to_dict()["output_tokens"] == 3 * 5


def test_a_malformed_stream_fails_its_request_only(stub: Stub) -> None:
    stub.behaviour.malformed = [False, True, False, False]
    result = _load(stub, concurrency=2, requests=4)
    assert (result.completed, result.errors, result.not_sent) == (3, 1, 0)
    assert result.error_kinds == {"AttributeError": 1}


def test_a_wrong_api_key_counts_every_request_as_an_error(stub: Stub) -> None:
    stub.behaviour.api_key = "sk-right"
    result = _load(stub, api_key="sk-wrong", requests=3)
    assert (result.completed, result.errors, result.error_kinds) == (0, 3, {"HTTP 401": 3})


def test_the_run_is_bounded_in_time(stub: Stub) -> None:
    stub.behaviour.hang = True
    started = time.monotonic()
    result = _load(stub, concurrency=2, requests=10, timeout_s=1.0)
    elapsed = time.monotonic() - started

    assert elapsed < 1.0 + 2 * SLACK_S
    assert result.completed == 0
    assert result.error_kinds == {TIME_LIMIT: 2}  # the two in flight were cut off ...
    assert result.not_sent == 8  # ... and the rest never sent


def test_the_time_bound_also_holds_while_requests_are_still_being_scheduled(stub: Stub) -> None:
    stub.behaviour.hang = True
    started = time.monotonic()
    result = _load(stub, concurrency=4, requests=50, rate=5.0, timeout_s=1.0)
    assert time.monotonic() - started < 1.0 + 2 * SLACK_S
    sent = len(result.results)
    assert result.completed == 0
    assert result.error_kinds == {TIME_LIMIT: sent}
    assert 1 <= sent <= 4 and result.not_sent == 50 - sent


def test_connection_failures_are_errors_not_crashes() -> None:
    result = asyncio.run(run_load(DOWN_URL, model="m", concurrency=1, requests=2, input_len=4, output_len=4))
    assert (result.completed, result.errors, result.error_kinds) == (0, 2, {"ClientConnectorError": 2})


def test_the_command_prints_a_table_per_level_and_writes_json(stub: Stub, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    stub.behaviour.api_key = "sk-from-env"
    command = [sys.executable, "-m", "serving.bench", "--url", stub.url, "--concurrency", "1,3",
               "--requests", "3", "--input-len", "8", "--output-len", "4", "--goodput", "ttft:5000", "tpot:1",
               "--json", str(out)]  # fmt: skip
    env = os.environ | {"SERVESTACK_API_KEY": "sk-from-env"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)

    assert result.returncode == 0, result.stderr
    assert "concurrency 1: 3/3 completed" in result.stdout
    assert "concurrency 3: 3/3 completed" in result.stdout
    for metric in ("TTFT", "TPOT", "ITL", "E2EL"):
        assert metric in result.stdout
    levels = json.loads(out.read_text())["levels"]
    assert [level["concurrency"] for level in levels] == [1, 3]
    for level in levels:
        assert level["model"] == "stub-model"  # found through /v1/models
        assert (level["completed"], level["output_tokens"]) == (3, 12)
        assert level["goodput"]["slos_ms"] == {"ttft": 5000.0, "tpot": 1.0}
        assert level["goodput"]["request_throughput"] <= level["request_throughput"]
        assert set(level["ttft"]) == {"mean", "p50", "p90", "p99"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--concurrency", "1,0"], "expected comma-separated integers >= 1"),
        (["--goodput", "itl:5"], "SLO 'itl:5': metric must be one of ttft, tpot, e2el"),
        (["--goodput", "ttft:fast"], "SLO 'ttft:fast': expected METRIC:MILLISECONDS"),
        (["--rate", "0"], "expected a number > 0 (got '0')"),
    ],
)
def test_the_command_rejects_bad_arguments_naming_them(arguments: list[str], message: str) -> None:
    command = [sys.executable, "-m", "serving.bench", "--url", DOWN_URL, "--requests", "1",
               "--input-len", "1", "--output-len", "1", *arguments]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2
    assert message in result.stderr


def test_the_command_fails_clearly_when_the_server_is_down() -> None:
    command = [sys.executable, "-m", "serving.bench", "--url", DOWN_URL, "--requests", "1",
               "--input-len", "1", "--output-len", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.startswith(f"bench failed: {DOWN_URL}:")
    assert "Traceback" not in result.stderr
