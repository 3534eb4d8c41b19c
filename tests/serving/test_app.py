"""The app through httpx.ASGITransport, with a fake engine behind the engine interface."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.app import build_app
from serving.context import INLINE_TOKENIZER_WORK, Lifecycle
from serving.engine import SamplingParams
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
        ("/v1/completions", {"prompt": ["a", ""]}, "prompt", "invalid_value"),
        ("/v1/completions", {"prompt": [0, 99]}, "prompt", "invalid_value"),
        ("/v1/completions", {"prompt": "w " * 9}, "prompt", "context_length_exceeded"),
        ("/v1/completions", {"prompt": "x", "n": 17}, "n", "invalid_value"),
        ("/v1/completions", {"prompt": ["a", "b"], "n": 9}, "n", "invalid_value"),
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
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    # vLLM's wording, which litellm maps to ContextWindowExceededError
    assert error["message"] == ("This model's maximum context length is 3 tokens for the prompt. However, your "
                                "prompt resulted in 4 tokens. Please reduce the length of the prompt.")


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
    assert 'servestack_requests_rejected_total{model_name="fake",reason="queue_full",revision="none"} 1.0' in metrics
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
        models = await client.get("/v1/models")
        assert not await lifecycle.wait_idle(0.05)  # still one in flight
        engine.gate.set()
        done = await in_flight
        assert await lifecycle.wait_idle(1.0)
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert refused.headers["connection"] == "close"  # the client's next connection goes to another replica
    assert models.status_code == 503 and models.headers["connection"] == "close"
    assert done.status_code == 200 and done.json()["choices"][0]["text"] == "the quick"


async def test_readiness_and_liveness_fail_when_the_engine_loop_stalls_or_dies(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine, stall_seconds=5) as client:
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/health")).status_code == 200  # vLLM's name for readiness
        engine.step_at = time.monotonic() - 10
        stalled = [await client.get(path) for path in ("/health/ready", "/health", "/health/live")]
        engine.step_at = time.monotonic()
        engine.is_dead = True
        dead_ready = await client.get("/health/ready")
        dead_live = await client.get("/health/live")
        dead_request = await client.post("/v1/completions", json={"prompt": "x"})
    assert [r.status_code for r in stalled] == [503, 503, 503]
    assert all("not stepped for 10s" in r.json()["status"] for r in stalled)
    assert (dead_ready.status_code, dead_live.status_code, dead_request.status_code) == (503, 503, 500)


async def test_a_loading_model_is_alive_not_stalled(make_client: Client) -> None:
    engine = FakeEngine(loaded=False)
    engine.step_at = time.monotonic() - 1000  # the loop does not tick while the model loads
    async with make_client(engine, stall_seconds=5) as client:
        live = await client.get("/health/live")
        models = await client.get("/v1/models")
    assert live.status_code == 200
    assert models.status_code == 503 and models.json()["error"]["code"] == "loading"


async def test_a_request_over_its_time_gets_504_and_is_cancelled(make_client: Client) -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with make_client(engine, request_timeout_seconds=0.1) as client:
        r = await client.post("/v1/completions", json={"prompt": "x"})
        engine.gate.set()
        await asyncio.sleep(0.05)
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "timeout_error"
    assert r.headers["x-should-retry"] == "false"  # the openai clients would send it three times otherwise
    assert engine.handles[0].cancelled.is_set()


async def test_metrics_are_labelled_with_the_model(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        await client.post("/v1/completions", json={"prompt": "a b", "max_tokens": 3})
        text = (await client.get("/metrics")).text
    for sample in (
        'servestack_prompt_tokens_total{model_name="fake",revision="none"} 2.0',
        'servestack_generation_tokens_total{model_name="fake",revision="none"} 3.0',
        'servestack_request_success_total{finished_reason="length",model_name="fake",revision="none"} 1.0',
        'servestack_time_to_first_token_seconds_count{model_name="fake",revision="none"} 1.0',
        'servestack_inter_token_latency_seconds_count{model_name="fake",revision="none"} 2.0',
        'servestack_e2e_request_latency_seconds_count{model_name="fake",revision="none"} 1.0',
        'servestack_request_queue_time_seconds_count{model_name="fake",revision="none"} 1.0',
        'servestack_model_load_seconds{model_name="fake",revision="none"} 1.5',
        'servestack_num_requests_running{model_name="fake",revision="none"} 0.0',
        'servestack_num_requests_waiting{model_name="fake",revision="none"} 0.0',
    ):
        assert sample in text, sample


# --- nulls, strict types, what is refused -------------------------------------------------------------

CHAT = {"messages": [{"role": "user", "content": "hi there"}]}


async def test_explicit_nulls_mean_the_defaults(make_client: Client) -> None:
    nulls = dict.fromkeys(("model", "max_tokens", "temperature", "top_p", "n", "seed", "stop", "stream",
                           "stream_options", "presence_penalty", "frequency_penalty", "logit_bias", "top_k",
                           "ignore_eos", "user", "logprobs", "echo", "suffix", "best_of", "store", "metadata"))
    chat_nulls = {k: v for k, v in nulls.items() if k not in ("echo", "suffix", "best_of")} | dict.fromkeys(
        ("max_completion_tokens", "top_logprobs", "tools", "tool_choice", "response_format", "audio",
         "modalities", "prediction", "web_search_options", "reasoning_effort", "verbosity", "functions",
         "function_call", "parallel_tool_calls"))
    engine = FakeEngine()
    async with make_client(engine, max_tokens=40) as client:
        completion = await client.post("/v1/completions", json={"prompt": "x", **nulls})
        chat = await client.post("/v1/chat/completions", json={**CHAT, **chat_nulls})
    assert (completion.status_code, chat.status_code) == (200, 200), (completion.text, chat.text)
    defaults = SamplingParams(max_tokens=16)
    assert engine.handles[0].params == defaults
    assert engine.handles[1].params == SamplingParams(max_tokens=40)


@pytest.mark.parametrize("temperature", [1e-45, 5e-324, 0.0, 9.9e-6])
async def test_a_tiny_temperature_is_greedy(make_client: Client, temperature: float) -> None:
    engine = FakeEngine()
    async with make_client(engine) as client:
        r = await client.post("/v1/completions", json={"prompt": "x", "temperature": temperature, "seed": 2**64 - 1})
    assert r.status_code == 200
    assert engine.handles[0].params.temperature == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", "5"), ("max_tokens", True), ("max_tokens", 5.0), ("stream", "true"), ("stream", 1),
     ("temperature", "1"), ("seed", 1.5), ("n", True), ("ignore_eos", "yes"), ("logprobs", True),
     ("echo", 1), ("model", 5), ("stop", 5), ("logit_bias", [1, 2])],
)
async def test_values_are_not_coerced_from_other_types(make_client: Client, field: str, value: Any) -> None:
    engine = FakeEngine()
    async with make_client(engine) as client:
        r = await client.post("/v1/completions", json={"prompt": "x", field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field
    assert engine.handles == []


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/chat/completions", "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("/v1/chat/completions", "tool_choice", "required"),
        ("/v1/chat/completions", "tool_choice", {"type": "function", "function": {"name": "f"}}),
        ("/v1/chat/completions", "functions", [{"name": "f"}]),
        ("/v1/chat/completions", "function_call", "auto"),
        ("/v1/chat/completions", "response_format", {"type": "json_object"}),
        ("/v1/chat/completions", "response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("/v1/chat/completions", "audio", {"voice": "alloy", "format": "wav"}),
        ("/v1/chat/completions", "modalities", ["text", "audio"]),
        ("/v1/chat/completions", "prediction", {"type": "content", "content": "x"}),
        ("/v1/chat/completions", "web_search_options", {}),
        ("/v1/chat/completions", "reasoning_effort", "high"),
        ("/v1/chat/completions", "verbosity", "low"),
        ("/v1/chat/completions", "moderation", {"mode": "block"}),
        ("/v1/chat/completions", "store", True),
        ("/v1/completions", "suffix", "!!"),
        ("/v1/completions", "best_of", 3),
    ],
)
async def test_what_is_not_implemented_is_refused_naming_the_parameter(
    make_client: Client, path: str, field: str, value: Any
) -> None:
    body = {**(CHAT if "chat" in path else {"prompt": "x"}), field: value}
    engine = FakeEngine()
    async with make_client(engine) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}: ") and "not supported by this server" in error["message"]
    assert engine.handles == []


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/v1/chat/completions", {"tools": [], "tool_choice": "none", "response_format": {"type": "text"},
                                  "modalities": ["text"], "store": False, "parallel_tool_calls": False,
                                  "service_tier": "auto", "prompt_cache_key": "k", "safety_identifier": "u",
                                  "metadata": {"a": "b"}, "user": "u"}),
        ("/v1/completions", {"suffix": "", "best_of": 1, "user": "u"}),
    ],
)
async def test_neutral_values_and_hints_are_accepted(make_client: Client, path: str, extra: dict[str, Any]) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post(path, json={**(CHAT if "chat" in path else {"prompt": "x"}), **extra})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("content", "param", "words"),
    [
        ([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}], "messages[0].content[0].type",
         "only text content parts"),
        ([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}], "messages[0].content[0].type",
         "only text content parts"),
        ([{"type": "text", "text": "a"}, {"type": "file", "file": {}}], "messages[0].content[1].type",
         "only text content parts"),
    ],
)
async def test_image_audio_and_file_parts_are_refused(make_client: Client, content: Any, param: str,
                                                      words: str) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]})
    error = r.json()["error"]
    assert (r.status_code, error["param"]) == (400, param)
    assert words in error["message"]


async def test_an_unknown_parameter_is_refused(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/chat/completions", json={**CHAT, "min_p": 0.1})
        nested = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x",
                                                                                "colour": "red"}]})
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "min_p: unrecognized request argument", "type": "invalid_request_error",
                                 "param": "min_p", "code": "unknown_parameter"}
    assert nested.json()["error"]["param"] == "messages[0].colour"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "a\udfffb"}, "prompt"),
        ("/v1/completions", {"prompt": ["ok", "\ud800"]}, "prompt[1]"),
        ("/v1/completions", {"prompt": "x", "stop": ["\udc00"]}, "stop[0]"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\udfff"}]}, "messages[0].content"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud83d"}]}]},
         "messages[0].content[0].text"),
    ],
)
async def test_a_lone_surrogate_is_a_400(make_client: Client, path: str, body: dict[str, Any], param: str) -> None:
    async with make_client(FakeEngine()) as client:  # valid JSON: the surrogate as a \u escape
        r = await client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    error = r.json()["error"]
    assert (r.status_code, error["param"]) == (400, param), r.text
    assert "lone surrogate" in error["message"]


async def test_an_error_quotes_only_a_little_of_a_huge_input(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/chat/completions", json={"messages": "x" * 2_000_000})
    assert r.status_code == 400
    assert len(r.content) < 500
    assert r.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the body must be a JSON object"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b"null", "the body must be a JSON object"),
        (b"{nope", "the body is not valid JSON"),
        (b'{"prompt": "\xff\xfe"}', "the body"),
    ],
)
async def test_bodies_that_are_not_a_request(make_client: Client, content: bytes, message: str) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith(message)


# --- limits before work ----------------------------------------------------------------------------


class SpyEngine(FakeEngine):
    """Records the threads that tokenize, and how often."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenized_on: list[str] = []

    def encode_prompt(self, text: str) -> list[int]:
        self.tokenized_on.append(threading.current_thread().name)
        return super().encode_prompt(text)

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        self.tokenized_on.append(threading.current_thread().name)
        return super().encode_chat(messages)


def _chat(content: str, arguments: str = "{}") -> dict[str, Any]:
    return {"messages": [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        {"role": "user", "content": content}]}


# A message costs 32 characters more than its own (the template's text around it); the tool call here adds
# c1, f and its arguments.
_CHAT_OWN = 2 * 32 + len("c1f")


@pytest.mark.parametrize(("path", "short", "long"), [
    ("/v1/completions", {"prompt": "w" * INLINE_TOKENIZER_WORK}, {"prompt": "w" * (INLINE_TOKENIZER_WORK + 1)}),
    # a request's prompts count together
    ("/v1/completions", {"prompt": ["w" * 512, "w" * 512]}, {"prompt": ["w" * 512, "w" * 513]}),
    ("/v1/chat/completions", _chat("w" * (INLINE_TOKENIZER_WORK - _CHAT_OWN - 2)),
     _chat("w" * (INLINE_TOKENIZER_WORK - _CHAT_OWN - 1))),
    # what a template renders besides the messages' text counts too: here, a tool call's arguments
    ("/v1/chat/completions", _chat("hi"), _chat("hi", arguments='{"w": "' + "w" * INLINE_TOKENIZER_WORK + '"}')),
])
async def test_long_texts_are_tokenized_off_the_event_loop_and_short_ones_on_it(
    make_client: Client, path: str, short: dict[str, Any], long: dict[str, Any]
) -> None:
    engine = SpyEngine()
    engine.max_model_len = INLINE_TOKENIZER_WORK  # room for the long texts' characters (one token per word)
    async with make_client(engine) as client:
        loop_thread = threading.current_thread().name  # the test client runs the app on the test's loop
        for body in (short, long):
            r = await client.post(path, json=body)
            assert r.status_code == 200, r.text
    short_on, long_on = sorted(set(engine.tokenized_on), key=engine.tokenized_on.index)
    assert short_on == loop_thread
    assert long_on.startswith("tokenize")


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", {"prompt": "w" * 41}),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "w" * 20},
                                           {"role": "user", "content": "w" * 21}]}),
])
async def test_a_text_too_long_for_the_limit_is_refused_before_tokenizing(
    make_client: Client, path: str, body: dict[str, Any]
) -> None:
    engine = SpyEngine()  # its longest token has 5 characters: 8 tokens hold at most 40
    async with make_client(engine, max_input_tokens=8) as client:
        r = await client.post(path, json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["message"].startswith("This model's maximum context length is 8 tokens")
    assert "41 characters long" in error["message"]
    assert engine.tokenized_on == []


async def test_a_body_over_the_limit_is_413(make_client: Client) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        yield b"x" * 5000
        yield b'"}'

    engine = FakeEngine()
    async with make_client(engine, max_body_bytes=4096) as client:
        declared = await client.post("/v1/completions", json={"prompt": "x" * 5000})
        streamed = await client.post("/v1/completions", content=chunked(),
                                     headers={"content-type": "application/json"})
        under = await client.post("/v1/completions", json={"prompt": "x " * 50, "max_tokens": 1})
    for r in (declared, streamed):
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        assert "4096" in r.json()["error"]["message"]
    assert under.status_code == 200


async def test_the_key_is_checked_before_the_body_is_read(make_client: Client) -> None:
    async with make_client(FakeEngine(), api_key=KEY, max_body_bytes=4096) as client:
        garbage = await client.post("/v1/completions", content=b"{nope", headers={"content-type": "application/json"})
        huge = await client.post("/v1/completions", content=b"x" * 10000)
    assert (garbage.status_code, huge.status_code) == (401, 401)


async def test_admission_counts_the_requests_still_being_tokenized(make_client: Client) -> None:
    gate = threading.Event()

    class SlowTokenizer(FakeEngine):
        def encode_prompt(self, text: str) -> list[int]:
            gate.wait(5)
            return super().encode_prompt(text)

    async with make_client(SlowTokenizer(), max_queue=3) as client:
        first = asyncio.create_task(client.post("/v1/completions", json={"prompt": "x", "n": 2}))
        await asyncio.sleep(0.05)
        refused = await client.post("/v1/completions", json={"prompt": "x", "n": 2})
        gate.set()
        assert (await first).status_code == 200
    assert refused.status_code == 429


# --- headers and routes clients rely on -------------------------------------------------------------


async def test_every_answer_carries_a_request_id(make_client: Client) -> None:
    async with make_client(FakeEngine(), api_key=KEY) as client:
        given = await client.post("/v1/completions", json={"prompt": "x"},
                                  headers={"Authorization": f"Bearer {KEY}", "X-Request-Id": "trace-42"})
        refused = await client.post("/v1/completions", json={"prompt": "x"})
        missing = await client.get("/nowhere", headers={"x-request-id": "x" * 500})
        probe = await client.get("/health/live")
    assert given.headers["x-request-id"] == "trace-42"
    for r in (refused, missing, probe):
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert len({r.headers["x-request-id"] for r in (refused, missing, probe)}) == 3


async def test_models_and_one_model(make_client: Client) -> None:
    async with make_client(FakeEngine(max_model_len=100)) as client:
        listed = await client.get("/v1/models")
        one = await client.get("/v1/models/fake")
        other = await client.get("/v1/models/org/other")
    assert [m["id"] for m in listed.json()["data"]] == ["fake"]
    assert one.json() == {**listed.json()["data"][0], "created": one.json()["created"]}
    assert one.json()["max_model_len"] == 100
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/embeddings", 404, "not_found"),
    ("GET", "/v1/completions", 405, "method_not_allowed"),
    ("DELETE", "/v1/models", 405, "method_not_allowed"),
])
async def test_wrong_routes_say_what_is_wrong(make_client: Client, method: str, path: str, status: int,
                                              code: str) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.request(method, path)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


async def test_an_unexpected_failure_is_a_500_in_the_openai_shape(make_client: Client) -> None:
    class Broken(FakeEngine):
        def submit(self, prompt_ids: Any, params: SamplingParams) -> Any:
            raise RuntimeError("a bug")

    async with make_client(Broken()) as client:
        r = await client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 500
    assert r.json()["error"] == {"message": "internal server error", "type": "server_error", "param": None,
                                 "code": "internal_error"}
    assert r.headers["x-request-id"]


# --- what generation offers -----------------------------------------------------------------------


async def test_n_choices_of_each_prompt(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine) as client:
        r = await client.post("/v1/completions", json={"prompt": ["a b", "c d e"], "n": 2, "max_tokens": 3,
                                                       "temperature": 1, "seed": 5})
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == ["the quick brown"] * 4
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}
    assert [h.prompt_ids for h in engine.handles] == [[0, 1], [0, 1], [0, 1, 2], [0, 1, 2]]
    assert [h.params.seed for h in engine.handles] == [5, 6, 5, 6]  # each choice its own draw, repeatably


async def test_streamed_choices_carry_their_index_and_the_role_once(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/chat/completions", json={**CHAT, "n": 2, "max_tokens": 3, "stream": True,
                                                            "stream_options": {"include_usage": True}})
    chunks = [json.loads(e) for e in events(r.text)[:-1]]
    by_choice: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        by_choice.setdefault(choice["index"], []).append(choice)
    assert sorted(by_choice) == [0, 1]
    for choices in by_choice.values():
        assert [c["delta"].get("role") for c in choices] == ["assistant", None, None]
        assert "".join(c["delta"]["content"] for c in choices) == "the quick brown"
        assert choices[-1]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}


async def test_continuous_usage_puts_the_usage_so_far_on_every_chunk(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        r = await client.post("/v1/completions", json={"prompt": "a", "max_tokens": 3, "stream": True,
                                                       "stream_options": {"include_usage": True,
                                                                          "continuous_usage_stats": True}})
    chunks = [json.loads(e) for e in events(r.text)[:-1]]
    assert [c["usage"]["completion_tokens"] for c in chunks] == [1, 2, 3, 3]


async def test_token_id_prompts_are_used_as_they_are(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine) as client:
        one = await client.post("/v1/completions", json={"prompt": [3, 1, 4], "max_tokens": 2, "echo": True})
        several = await client.post("/v1/completions", json={"prompt": [[1], [5, 9]], "max_tokens": 1})
    assert [h.prompt_ids for h in engine.handles] == [[3, 1, 4], [1], [5, 9]]
    assert one.json()["choices"][0]["text"] == "fox quick jumps" + "the quick"
    assert one.json()["usage"]["prompt_tokens"] == 3
    assert several.json()["usage"]["prompt_tokens"] == 3


async def test_echo_puts_the_prompt_before_the_text(make_client: Client) -> None:
    async with make_client(FakeEngine()) as client:
        whole = await client.post("/v1/completions", json={"prompt": "one two ", "max_tokens": 2, "echo": True})
        streamed = await client.post("/v1/completions", json={"prompt": "one two ", "max_tokens": 2, "echo": True,
                                                              "stream": True})
    assert whole.json()["choices"][0]["text"] == "one two the quick"
    assert [json.loads(e)["choices"][0]["text"] for e in events(streamed.text)[:-1]] == ["one two the", " quick"]


async def test_completion_logprobs_with_the_echoed_prompt(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine) as client:
        r = await client.post("/v1/completions", json={"prompt": [2, 3], "max_tokens": 2, "logprobs": 1,
                                                       "echo": True})
    assert (engine.handles[0].params.logprobs, engine.handles[0].params.prompt_logprobs) == (1, 1)
    assert r.json()["choices"][0]["logprobs"] == {
        "tokens": ["brown", "fox", "the", "quick"],
        "token_logprobs": [None, -0.3, -0.0, -0.1],
        "top_logprobs": [None, {}, {"the": -0.0}, {"the": -0.0}],
        "text_offset": [0, 5, 8, 11],
    }


async def test_chat_logprobs_whole_and_streamed(make_client: Client) -> None:
    body = {**CHAT, "max_tokens": 2, "logprobs": True, "top_logprobs": 2}
    async with make_client(FakeEngine()) as client:
        whole = await client.post("/v1/chat/completions", json=body)
        streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
        refused = await client.post("/v1/chat/completions", json={**CHAT, "top_logprobs": 2})
    content = whole.json()["choices"][0]["logprobs"]["content"]
    assert content[1] == {"token": "quick", "logprob": -0.1, "bytes": list(b"quick"), "top_logprobs": [
        {"token": "the", "logprob": -0.0, "bytes": list(b"the")}, {"token": "quick", "logprob": -0.1,
                                                                   "bytes": list(b"quick")}]}
    chunks = [json.loads(e) for e in events(streamed.text)[:-1]]
    assert [c["choices"][0]["logprobs"]["content"] for c in chunks] == [[content[0]], [content[1]]]
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "top_logprobs"


async def test_penalties_and_biases_reach_the_engine(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine) as client:
        await client.post("/v1/chat/completions", json={**CHAT, "presence_penalty": 1.5, "frequency_penalty": -2,
                                                        "logit_bias": {"3": -100, "7": 2.5}})
        out_of_range = await client.post("/v1/chat/completions", json={**CHAT, "logit_bias": {"15": 1}})
        not_an_id = await client.post("/v1/chat/completions", json={**CHAT, "logit_bias": {"a": 1}})
    params = engine.handles[0].params
    assert (params.presence_penalty, params.frequency_penalty, params.logit_bias) == (1.5, -2.0, ((3, -100.0),
                                                                                                 (7, 2.5)))
    for r in (out_of_range, not_an_id):
        assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"


async def test_conversations_reach_the_template_with_their_tool_turns(make_client: Client) -> None:
    seen: list[list[dict[str, Any]]] = []

    class Recording(FakeEngine):
        def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
            seen.append(messages)
            return super().encode_chat([{**m, "content": m["content"] or "x"} for m in messages])

    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": "thanks", "name": "ann"},
    ]
    async with make_client(Recording()) as client:
        r = await client.post("/v1/chat/completions", json={"messages": messages})
    assert r.status_code == 200, r.text
    assert seen[0][1]["tool_calls"] == [{"id": "c1", "type": "function", "function": {
        "name": "weather", "arguments": {"city": "Paris"}}}]
    assert seen[0][2] == {"role": "tool", "content": "sunny", "tool_call_id": "c1"}
    assert seen[0][3] == {"role": "user", "content": "thanks", "name": "ann"}


# --- metrics ---------------------------------------------------------------------------------------


async def test_metrics_of_requests_http_answers_and_aborts(make_client: Client) -> None:
    engine = FakeEngine()
    async with make_client(engine, request_timeout_seconds=0.2) as client:
        await client.post("/v1/completions", json={"prompt": "a b", "max_tokens": 3})
        await client.post("/v1/completions", json={"prompt": ""})
        await client.get("/v1/nothing")
        engine.gate.clear()
        await client.post("/v1/completions", json={"prompt": "x"})  # 504, cancelled
        engine.gate.set()
        text = (await client.get("/metrics")).text
    for sample in (
        'servestack_request_prompt_tokens_count{model_name="fake",revision="none"} 1.0',
        'servestack_request_prompt_tokens_sum{model_name="fake",revision="none"} 2.0',
        'servestack_request_generation_tokens_sum{model_name="fake",revision="none"} 3.0',
        'servestack_request_params_max_tokens_sum{model_name="fake",revision="none"} 3.0',
        'servestack_request_time_per_output_token_seconds_count{model_name="fake",revision="none"} 1.0',
        'servestack_request_prefill_time_seconds_count{model_name="fake",revision="none"} 1.0',
        'servestack_request_decode_time_seconds_count{model_name="fake",revision="none"} 1.0',
        'servestack_request_inference_time_seconds_count{model_name="fake",revision="none"} 1.0',
        'servestack_request_success_total{finished_reason="abort",model_name="fake",revision="none"} 1.0',
        'servestack_kv_cache_usage_perc{model_name="fake",revision="none"} 0.25',
        'servestack_http_requests_total{handler="/v1/completions",method="POST",status="200"} 1.0',
        'servestack_http_requests_total{handler="/v1/completions",method="POST",status="400"} 1.0',
        'servestack_http_requests_total{handler="/v1/completions",method="POST",status="504"} 1.0',
        'servestack_http_requests_total{handler="none",method="GET",status="404"} 1.0',
    ):
        assert sample in text, sample
    assert "_created" not in text
    assert 'reason="timeout"' not in text  # a 504 is not a refusal
