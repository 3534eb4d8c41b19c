"""The app through httpx.ASGITransport, with a fake engine behind the engine interface."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.app import Lifecycle, build_app
from serving.settings import Settings
from tests.serving.fakes import SCRIPT, FakeEngine

KEY = "secret"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text("{}")
    return tmp_path / "fake"


Client = Callable[..., Any]


@pytest.fixture
def make_client(model_dir: Path) -> Client:
    """`async with make_client(engine, **settings) as client:` runs the app's lifespan around the client."""

    @asynccontextmanager
    async def make(engine: FakeEngine, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(model_path=model_dir, model_name="fake", **overrides)
        app = build_app(settings, engine)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client

    return make


def events(body: str) -> list[str]:
    return [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]


async def test_lifespan_starts_and_stops_the_engine(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine):
        assert engine.started and not engine.stopped
    assert engine.stopped


async def test_completion_body_and_usage(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/completions", json={"prompt": "one two three", "max_tokens": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["model"] == "fake"
    assert body["choices"] == [{"index": 0, "text": " ".join(SCRIPT[:4]), "logprobs": None,
                                "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_completions_default_to_16_tokens_and_chat_to_the_server_maximum(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine, max_tokens=40) as client:
        await client.post("/v1/completions", json={"prompt": "x"})
        await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert [h.params.max_tokens for h in engine.handles] == [16, 40]


async def test_chat_body(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/chat/completions", json={
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
            "max_completion_tokens": 3, "temperature": 0, "seed": 1, "stop": ["\n"]})
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "the quick brown"}
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}


async def test_sampling_fields_reach_the_engine(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine) as client:
        await client.post("/v1/completions", json={
            "prompt": "x", "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "top_k": 7, "seed": 42,
            "stop": ["a", "b"], "ignore_eos": True})
    params = engine.handles[0].params
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k, params.seed) == (5, 0.5, 0.9, 7, 42)
    assert params.stop == ("a", "b")
    assert params.ignore_eos


async def test_streamed_chat_with_usage(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}})
    assert r.headers["content-type"].startswith("text/event-stream")
    raw = events(r.text)
    assert raw[-1] == "[DONE]"
    chunks = [json.loads(e) for e in raw[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["the", " quick", " brown"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert len({c["id"] for c in chunks}) == 1


async def test_an_error_after_the_stream_started_is_a_final_chunk(make_client: Client) -> None:
    engine = FakeEngine()
    engine.fail_after = 2
    async with make_client(engine) as client:
        r = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 5, "stream": True})
    raw = events(r.text)
    assert r.status_code == 200
    assert raw[-1] == "[DONE]"
    assert json.loads(raw[-2])["error"]["code"] == "engine_dead"
    assert [json.loads(e)["choices"][0]["text"] for e in raw[:-2]] == ["the", " quick"]


async def test_an_engine_failure_before_the_answer_is_500(make_client: Client) -> None:
    engine = FakeEngine()
    engine.fail_after = 0
    async with make_client(engine) as client:
        r = await client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 500
    assert r.json()["error"] == {"message": "the fake engine failed", "type": "server_error", "param": None,
                                 "code": "engine_dead"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEY}"}])
async def test_401_without_the_right_bearer_key(make_client: Client, headers: dict[str, str]) -> None:
    async with make_client(FakeEngine(), api_key=KEY) as client:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")):
            r = await client.request(method, path, headers=headers, json={"prompt": "x"})
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["code"] == "invalid_api_key"
        ok = await client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        for path in ("/health/live", "/health/ready", "/metrics"):
            assert (await client.get(path)).status_code == 200, path


async def test_an_empty_key_means_no_auth(make_client: Client) -> None:
    async with make_client(FakeEngine(), api_key="") as client:
        assert (await client.get("/v1/models")).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "param", "code"),
    [
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens", "invalid_value"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 513}, "max_tokens", "invalid_value"),
        ("/v1/completions", {"prompt": ""}, "prompt", "invalid_value"),
        ("/v1/completions", {"prompt": ["a", "b"]}, "prompt", "invalid_value"),
        ("/v1/completions", {"prompt": "w " * 9}, "prompt", "context_length_exceeded"),
        ("/v1/completions", {"prompt": "x", "n": 2}, "n", "invalid_value"),
        ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p", "invalid_value"),
        ("/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        ("/v1/completions", {"prompt": 5}, "prompt", "invalid_value"),
        ("/v1/chat/completions", {"messages": []}, "messages", "invalid_value"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, "messages", "invalid_value"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0},
         "max_completion_tokens", "invalid_value"),
        ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": "x"}]}, "messages",
         "invalid_value"),
    ],
)
async def test_bad_requests(make_client: Client, path: str, body: dict[str, Any], param: str, code: str) -> None:
    engine = FakeEngine()
    async with make_client(engine, max_input_tokens=8) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert param.split("[")[0] in error["message"] or "prompt" in error["message"]
    assert engine.handles == []  # nothing reached the engine


async def test_a_prompt_that_leaves_no_room_in_the_context(make_client: Client) -> None:
    async with make_client(FakeEngine(max_model_len=4)) as client:
        r = await client.post("/v1/completions", json={"prompt": "a b c d"})
    assert r.json()["error"]["code"] == "context_length_exceeded"


async def test_max_tokens_is_capped_by_the_context(make_client: Client) -> None:
    engine = FakeEngine(max_model_len=10)
    async with make_client(engine) as client:
        await client.post("/v1/completions", json={"prompt": "a b c", "max_tokens": 100})
    assert engine.handles[0].params.max_tokens == 7


async def test_unknown_routes_and_models(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        missing = await client.get("/v2/nothing")
        wrong_model = await client.post("/v1/completions", json={"prompt": "x", "model": "other"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong_model.status_code == 404
    assert wrong_model.json()["error"]["code"] == "model_not_found"


async def test_429_with_retry_after_when_the_queue_is_full(make_client: Client) -> None:
    engine = FakeEngine()
    engine.extra_running = 3
    async with make_client(engine, max_queue=3) as client:
        r = await client.post("/v1/completions", json={"prompt": "x"})
        metrics = (await client.get("/metrics")).text
        engine.extra_running = 2
        ok = await client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert 'servestack_requests_rejected_total{model_name="fake",reason="queue_full"} 1.0' in metrics
    assert ok.status_code == 200


async def test_503_while_loading(make_client: Client) -> None:
    engine = FakeEngine(loaded=False)
    async with make_client(engine) as client:
        ready = await client.get("/health/ready")
        live = await client.get("/health/live")
        r = await client.post("/v1/completions", json={"prompt": "x"})
        engine.is_loaded = True
        ready_after = await client.get("/health/ready")
    assert (ready.status_code, live.status_code, r.status_code, ready_after.status_code) == (503, 200, 503, 200)
    assert r.json()["error"]["code"] == "loading"
    assert r.headers["retry-after"]


async def test_503_while_draining_and_in_flight_work_finishes(make_client: Client) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with make_client(engine) as client:
        lifecycle: Lifecycle = client.app.state.lifecycle  # type: ignore[attr-defined]
        in_flight = asyncio.create_task(client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}))
        while lifecycle.in_flight == 0:
            await asyncio.sleep(0.01)
        lifecycle.begin_drain()
        ready = await client.get("/health/ready")
        refused = await client.post("/v1/completions", json={"prompt": "x"})
        assert not await lifecycle.wait_idle(0.05)  # still one in flight
        engine.gate.set()
        done = await in_flight
        assert await lifecycle.wait_idle(1.0)
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert done.status_code == 200 and done.json()["choices"][0]["text"] == "the quick"


async def test_readiness_fails_when_the_engine_loop_stalls_or_dies(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine, stall_seconds=5) as client:
        assert (await client.get("/health/ready")).status_code == 200
        engine.step_at = time.monotonic() - 10
        stalled = await client.get("/health/ready")
        engine.step_at = time.monotonic()
        engine.is_dead = True
        dead_ready = await client.get("/health/ready")
        dead_live = await client.get("/health/live")
        dead_request = await client.post("/v1/completions", json={"prompt": "x"})
    assert stalled.status_code == 503 and "not stepped" in stalled.json()["status"]
    assert (dead_ready.status_code, dead_live.status_code, dead_request.status_code) == (503, 503, 500)


async def test_a_request_over_its_time_gets_504_and_is_cancelled(make_client: Client) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with make_client(engine, request_timeout_seconds=0.1) as client:
        r = await client.post("/v1/completions", json={"prompt": "x"})
        engine.gate.set()
        await asyncio.sleep(0.05)
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "timeout_error"
    assert engine.handles[0].cancelled.is_set()


async def test_metrics_are_labelled_with_the_model(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        await client.post("/v1/completions", json={"prompt": "a b", "max_tokens": 3})
        text = (await client.get("/metrics")).text
    for sample in (
        'servestack_prompt_tokens_total{model_name="fake"} 2.0',
        'servestack_generation_tokens_total{model_name="fake"} 3.0',
        'servestack_request_success_total{finished_reason="length",model_name="fake"} 1.0',
        'servestack_time_to_first_token_seconds_count{model_name="fake"} 1.0',
        'servestack_inter_token_latency_seconds_count{model_name="fake"} 2.0',
        'servestack_e2e_request_latency_seconds_count{model_name="fake"} 1.0',
        'servestack_request_queue_time_seconds_count{model_name="fake"} 1.0',
        'servestack_model_load_seconds{model_name="fake"} 1.5',
        'servestack_num_requests_running{model_name="fake"} 0.0',
        'servestack_num_requests_waiting{model_name="fake"} 0.0',
    ):
        assert sample in text, sample
