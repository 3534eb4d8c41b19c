"""End to end: `python -m serving` with the tiny model on 127.0.0.1, driven by the openai client and httpx."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from serving.app import build_app
from serving.engine import TorchEngine
from serving.settings import Settings
from tests.serving.conftest import API_KEY, ServerProcess, ThreadServer, metric, wait_ready


def client(server: ServerProcess, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=60)


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sse_events(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def test_completion_with_the_openai_client(server: ServerProcess) -> None:
    result = client(server).completions.create(
        model="tiny", prompt="Hello, world", max_tokens=7, temperature=0, extra_body={"ignore_eos": True}
    )
    assert result.object == "text_completion"
    assert result.model == "tiny"
    assert result.choices[0].finish_reason == "length"
    assert result.choices[0].text
    assert result.usage is not None
    assert result.usage.completion_tokens == 7
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + 7


def test_chat_with_the_openai_client(server: ServerProcess) -> None:
    result = client(server).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi there"}], max_tokens=5, temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert result.object == "chat.completion"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5


def test_streamed_chat_equals_the_unstreamed_one_and_reports_usage(server: ServerProcess) -> None:
    messages = [{"role": "user", "content": "Tell me about the fox"}]
    whole = client(server).chat.completions.create(
        model="tiny", messages=messages, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    stream = client(server).chat.completions.create(
        model="tiny", messages=messages, max_tokens=12, temperature=0, extra_body={"ignore_eos": True},
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert whole.usage is not None and chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_streamed_completion_over_raw_http_ends_with_done(server: ServerProcess) -> None:
    body = {"model": "tiny", "prompt": "Numbers: 1 2 3", "max_tokens": 6, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, headers=auth(), timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(list(r.iter_lines()))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["usage"] is None for c in chunks)  # no include_usage: no usage chunk


def test_models_lists_the_served_model(server: ServerProcess) -> None:
    assert [m.id for m in client(server).models.list()] == ["tiny"]


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_key_gets_401(server: ServerProcess, key: str | None) -> None:
    headers = auth(key) if key else {}
    r = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "x"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong-key").models.list()


def test_probes_and_metrics_need_no_key(server: ServerProcess) -> None:
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert httpx.get(f"{server.base_url}{path}").status_code == 200, path


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 100000}, "max_tokens"),
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"prompt": "word " * 200}, "prompt"),  # over SERVESTACK_MAX_INPUT_TOKENS=64
        ("/v1/completions", {"prompt": "x", "n": 9}, "n"),  # more sequences than SERVESTACK_MAX_BATCH_SIZE=8
        ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
        ("/v1/completions", {"max_tokens": 3}, "prompt"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 9}, "n"),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_bad_requests_get_400_naming_the_parameter(
    server: ServerProcess, path: str, body: dict[str, object], param: str
) -> None:
    r = httpx.post(f"{server.base_url}{path}", json=body, headers=auth())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert set(error) >= {"message", "type", "code", "param"}


def test_malformed_json_gets_400(server: ServerProcess) -> None:
    r = httpx.post(f"{server.base_url}/v1/completions", content=b"{not json", headers={
        **auth(), "content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_an_unknown_model_gets_404(server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError):
        client(server).completions.create(model="gpt-9", prompt="x", max_tokens=1)


def test_greedy_outputs_are_the_same_alone_and_in_a_batch(server: ServerProcess) -> None:
    prompts = [f"Request {i}: " + "the quick brown fox " * (i % 4 + 1) for i in range(8)]
    extra = {"ignore_eos": True}

    def one(prompt: str) -> str:
        r = client(server).completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0,
                                              extra_body=extra)
        return r.choices[0].text

    sequential = [one(p) for p in prompts]

    async def all_at_once() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)
        results = await asyncio.gather(*[
            aclient.completions.create(model="tiny", prompt=p, max_tokens=24, temperature=0, extra_body=extra)
            for p in prompts
        ])
        await aclient.close()
        return [r.choices[0].text for r in results]

    batched_before = metric(server.base_url, "servestack_batch_size_sum")
    steps_before = metric(server.base_url, "servestack_batch_size_count")
    concurrent = asyncio.run(all_at_once())
    assert concurrent == sequential
    # ...and they really shared decode steps: more than one sequence per step on average.
    tokens = metric(server.base_url, "servestack_batch_size_sum") - batched_before
    steps = metric(server.base_url, "servestack_batch_size_count") - steps_before
    assert tokens / steps > 1.5


def test_seeded_sampling_repeats(server: ServerProcess) -> None:
    def sample(seed: int) -> str:
        r = client(server).completions.create(model="tiny", prompt="Hello", max_tokens=16, temperature=1.0,
                                              top_p=0.9, seed=seed, extra_body={"ignore_eos": True, "top_k": 50})
        return r.choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(4)}) > 1


def test_metrics_move(server: ServerProcess) -> None:
    base = server.base_url
    before = {name: metric(base, name, model_name="tiny") for name in (
        "servestack_prompt_tokens_total", "servestack_generation_tokens_total",
        "servestack_time_to_first_token_seconds_count", "servestack_e2e_request_latency_seconds_count")}
    success = metric(base, "servestack_request_success_total", finished_reason="length")
    rejected = metric(base, "servestack_requests_rejected_total", reason="unauthorized")
    client(server).completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0,
                                      extra_body={"ignore_eos": True})
    httpx.post(f"{base}/v1/completions", json={"prompt": "x"})
    after = {name: metric(base, name, model_name="tiny") for name in before}
    assert after["servestack_generation_tokens_total"] - before["servestack_generation_tokens_total"] == 4
    assert after["servestack_prompt_tokens_total"] > before["servestack_prompt_tokens_total"]
    assert after["servestack_time_to_first_token_seconds_count"] == before[
        "servestack_time_to_first_token_seconds_count"] + 1
    assert after["servestack_e2e_request_latency_seconds_count"] == before[
        "servestack_e2e_request_latency_seconds_count"] + 1
    assert metric(base, "servestack_request_success_total", finished_reason="length") == success + 1
    assert metric(base, "servestack_requests_rejected_total", reason="unauthorized") == rejected + 1
    assert metric(base, "servestack_model_load_seconds", model_name="tiny") > 0


LONG = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 30000, "temperature": 0, "ignore_eos": True,
        "stream": True}


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def small_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """Two slots in all, long generations allowed: overflow and disconnects are easy to provoke."""
    return start_server(SERVESTACK_MAX_BATCH_SIZE="2", SERVESTACK_MAX_QUEUE="2", SERVESTACK_MAX_TOKENS="32000")


def test_overflow_gets_429_with_retry_after_and_disconnects_free_slots(small_server: ServerProcess) -> None:
    base = small_server.base_url
    generated = metric(base, "servestack_generation_tokens_total")
    with httpx.Client(base_url=base, timeout=30) as http:
        streams = [http.stream("POST", "/v1/completions", json=LONG) for _ in range(2)]
        responses = [s.__enter__() for s in streams]
        lines = [r.iter_lines() for r in responses]  # kept alive: a dropped iterator closes its connection
        for r, line in zip(responses, lines, strict=True):
            assert r.status_code == 200
            next(line)  # the first chunk: the request is in the batch
        assert metric(base, "servestack_num_requests_running") == 2

        overflow = httpx.post(f"{base}/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert overflow.status_code == 429
        assert overflow.headers["retry-after"]
        assert overflow.json()["error"]["type"] == "rate_limit_error"
        assert metric(base, "servestack_requests_rejected_total", reason="queue_full") >= 1

        for s in streams:  # the clients go away mid-stream
            s.__exit__(None, None, None)
    wait_for(lambda: metric(base, "servestack_num_requests_running") == 0, timeout=5)
    # They were cancelled, not run to the end: far fewer than 2 x 3500 tokens were made.
    assert metric(base, "servestack_generation_tokens_total") - generated < 2 * 30000
    assert httpx.post(f"{base}/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200


def test_a_non_streaming_client_that_disconnects_frees_its_slot(small_server: ServerProcess) -> None:
    base = small_server.base_url
    generated = metric(base, "servestack_generation_tokens_total")
    finished = metric(base, "servestack_request_success_total", finished_reason="length")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/completions", json={**LONG, "stream": False}, timeout=0.5)
    wait_for(lambda: metric(base, "servestack_num_requests_running") == 0, timeout=5)
    assert metric(base, "servestack_generation_tokens_total") - generated < 30000
    assert metric(base, "servestack_request_success_total", finished_reason="length") == finished
    assert metric(base, "servestack_request_success_total", finished_reason="abort") >= 1
    assert "Traceback" not in small_server.log.read_text()  # a client that leaves is not an error


def test_a_request_in_flight_completes_across_sigterm(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(SERVESTACK_MAX_TOKENS="32000", SERVESTACK_DRAIN_SECONDS="60")
    body = {**LONG, "max_tokens": 6000, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        first = next(lines)
        server.terminate()
        # Draining: not ready, and new work is refused with 503, while the stream goes on.
        wait_for(lambda: httpx.get(f"{server.base_url}/health/ready").status_code == 503, timeout=5)
        refused = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        events = sse_events([first, *lines])
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 6000
    assert server.process.wait(timeout=30) == 0


def test_a_bad_setting_stops_the_start_naming_the_variable(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(wait=False, SERVESTACK_MAX_BATCH_SIZE="lots")
    assert server.process.wait(timeout=60) == 2
    output = server.log.read_text()
    assert "SERVESTACK_MAX_BATCH_SIZE" in output
    assert "'lots'" in output


class GatedEngine(TorchEngine):
    """The real engine, whose model load waits for the test's go."""

    go = threading.Event()

    def load(self) -> None:
        self.go.wait(30)
        super().load()


def test_503_until_the_model_is_loaded(tiny_model: Path) -> None:
    settings = Settings(model_path=tiny_model)
    engine = GatedEngine(tiny_model, model_name="tiny", threads=1)
    with ThreadServer(build_app(settings, engine)) as running:
        assert httpx.get(f"{running.base_url}/health/live").status_code == 200
        ready = httpx.get(f"{running.base_url}/health/ready")
        assert ready.status_code == 503
        r = httpx.post(f"{running.base_url}/v1/completions", json={"prompt": "x"})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "loading"
        GatedEngine.go.set()
        wait_ready(running.base_url)
        r = httpx.post(f"{running.base_url}/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 200


def _engine_child(server: ServerProcess) -> psutil.Process:
    children = psutil.Process(server.process.pid).children()
    (engine,) = [c for c in children if "multiprocessing.spawn" in " ".join(c.cmdline())]
    return engine


def test_the_server_exits_1_when_its_engine_dies(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    _engine_child(server).kill()
    assert server.process.wait(timeout=30) == 1  # Kubernetes restarts the container now, not after its probes
    log = server.log.read_text()
    assert "the engine process exited (code -9)" in log
    assert "the engine has failed (see above): exiting with code 1 so that the server is restarted" in log


def test_a_model_that_cannot_load_stops_the_server_at_once(
    start_server: Callable[..., ServerProcess], tiny_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    server = start_server(wait=False, MODEL_PATH=str(broken))
    assert server.process.wait(timeout=90) == 1
    log = server.log.read_text()
    assert f"loading the model from {broken} failed" in log
    assert "exiting with code 1" in log


def test_a_gpu_node_without_cuda_does_not_serve_on_the_cpu(start_server: Callable[..., ServerProcess]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    server = start_server(wait=False, SERVESTACK_REQUIRE_CUDA="1")
    assert server.process.wait(timeout=90) == 1
    log = server.log.read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    assert any(line["level"] == "CRITICAL" and line["logger"] == "serving.engine" and
               line["message"].startswith("SERVESTACK_REQUIRE_CUDA is set but CUDA is not usable") for line in lines)
    assert "exiting with code 1" in log
    assert "Traceback" not in log  # one clear line, not a stack
