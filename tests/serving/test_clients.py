"""Real OpenAI clients, unchanged, against `python -m serving` on 127.0.0.1: the official `openai` package,
`langchain-openai` and `litellm`. Chat and completions, streamed and not, logprobs, penalties, explicit
nulls, n choices and prompt lists, the error classes each client raises (litellm's context-window error
included), retries on a 429 and none on a 504. Nothing may leave this machine: a guard refuses any
connection or name lookup beyond the loopback, and the test fails if a client tried one."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.serving.conftest import API_KEY, ServerProcess, metric

# litellm reads its model cost map from the network at import unless told to use the copy it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

WORDS = "the quick brown fox jumps over the lazy dog " * 600  # far more than SERVESTACK_MAX_INPUT_TOKENS=64
HI = [{"role": "user", "content": "Hi there"}]


# --- no traffic beyond this machine -------------------------------------------------------------------


def _local(host: Any) -> bool:
    host = str(host)
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module", autouse=True)
def loopback_only() -> Iterator[list[str]]:
    attempts: list[str] = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"no network in tests: {address}")
        return connect(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _local(host.decode() if isinstance(host, bytes) else host):
            attempts.append(f"lookup {host}")
            raise socket.gaierror(f"no network in tests: {host}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo
    yield attempts
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    assert attempts == [], f"a client reached for the network: {attempts}"


# --- servers -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_slot(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """One sequence at a time and a 2 s request timeout: a 429 and a 504 are easy to provoke."""
    return start_server(SERVESTACK_API_KEY=API_KEY, SERVESTACK_MAX_BATCH_SIZE="1", SERVESTACK_MAX_QUEUE="1",
                        SERVESTACK_MAX_TOKENS="32000", SERVESTACK_REQUEST_TIMEOUT_SECONDS="2")


def openai_client(server: ServerProcess, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, **{"max_retries": 0, "timeout": 60,
                                                                                 **options})


class Occupied:
    """Holds the one slot of `one_slot` with a long stream until `release()` (or a timer) lets it go."""

    def __init__(self, server: ServerProcess) -> None:
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 30000, "ignore_eos": True, "stream": True}
        self._client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"},
                                    timeout=60)
        self._stream = self._client.stream("POST", "/v1/completions", json=body)
        response = self._stream.__enter__()
        assert response.status_code == 200
        self._lines = response.iter_lines()
        next(self._lines)  # in the batch

    def release(self) -> None:
        self._stream.__exit__(None, None, None)
        self._client.close()

    def release_after(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.release)
        timer.start()
        return timer


def wait_idle(server: ServerProcess) -> None:
    deadline = time.monotonic() + 10
    while metric(server.base_url, "servestack_num_requests_running") or metric(
            server.base_url, "servestack_num_requests_waiting"):
        assert time.monotonic() < deadline, "the server never went idle"
        time.sleep(0.05)


def http_count(server: ServerProcess, status: int) -> float:
    return metric(server.base_url, "servestack_http_requests_total", handler="/v1/completions",
                  status=str(status))


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


# --- the official openai client ----------------------------------------------------------------------


def test_openai_chat_and_completions_whole_and_streamed(server: ServerProcess) -> None:
    client = openai_client(server)
    chat = client.chat.completions.create(model="tiny", messages=HI, max_tokens=8, temperature=0, seed=1,
                                          extra_body={"ignore_eos": True})
    streamed = list(client.chat.completions.create(model="tiny", messages=HI, max_tokens=8, temperature=0, seed=1,
                                                   extra_body={"ignore_eos": True}, stream=True,
                                                   stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == chat.choices[0].message.content
    assert streamed[-1].usage is not None and streamed[-1].usage.completion_tokens == 8
    text = client.completions.create(model="tiny", prompt="Once upon", max_tokens=6, temperature=0,
                                     extra_body={"ignore_eos": True})
    pieces = list(client.completions.create(model="tiny", prompt="Once upon", max_tokens=6, temperature=0,
                                            extra_body={"ignore_eos": True}, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == text.choices[0].text
    assert text.usage is not None and text.usage.completion_tokens == 6


def test_openai_explicit_nulls(server: ServerProcess) -> None:
    """The SDK sends null for each of these; the server applies its defaults."""
    client = openai_client(server)
    chat = client.chat.completions.create(
        model="tiny", messages=HI, max_tokens=None, max_completion_tokens=4, temperature=None, top_p=None, n=None,
        stream=None, seed=None, stop=None, presence_penalty=None, frequency_penalty=None, logit_bias=None,
        logprobs=None, top_logprobs=None, user=None, response_format=None, tools=None, tool_choice=None,
        stream_options=None, extra_body={"top_k": None, "ignore_eos": True})
    assert chat.usage is not None and chat.usage.completion_tokens == 4
    text = client.completions.create(model="tiny", prompt="x", max_tokens=3, temperature=None, top_p=None, n=None,
                                     echo=None, logprobs=None, suffix=None, best_of=None, seed=None, stop=None)
    assert text.choices[0].finish_reason in ("length", "stop")


def test_openai_logprobs(server: ServerProcess) -> None:
    client = openai_client(server)
    chat = client.chat.completions.create(model="tiny", messages=HI, max_tokens=5, temperature=0, logprobs=True,
                                          top_logprobs=2, extra_body={"ignore_eos": True})
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 5
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 and t.top_logprobs[0].logprob == t.logprob
               for t in content)  # greedy: the chosen token is the most likely
    chunks = list(client.chat.completions.create(model="tiny", messages=HI, max_tokens=5, temperature=0,
                                                 logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True},
                                                 stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or ()]
    assert [t.model_dump() for t in streamed] == [t.model_dump() for t in content]

    echoed = client.completions.create(model="tiny", prompt="Hello, world", max_tokens=3, temperature=0, logprobs=2,
                                       echo=True, extra_body={"ignore_eos": True})
    logprobs = echoed.choices[0].logprobs
    assert echoed.usage is not None and logprobs is not None and logprobs.tokens is not None
    assert len(logprobs.tokens) == echoed.usage.prompt_tokens + 3
    assert logprobs.token_logprobs is not None and logprobs.token_logprobs[0] is None
    assert echoed.choices[0].text.startswith("Hello, world")


def test_openai_penalties_and_logit_bias(server: ServerProcess, tiny_tokenizer: Any) -> None:
    client = openai_client(server)
    (token,) = tiny_tokenizer.encode("fox", add_special_tokens=False)[:1]
    text = tiny_tokenizer.decode([token])
    forced = client.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0,
                                       logit_bias={str(token): 100}, extra_body={"ignore_eos": True})
    assert forced.choices[0].text == text * 4
    plain = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0,
                                      extra_body={"ignore_eos": True})
    penalised = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0,
                                          frequency_penalty=2.0, presence_penalty=2.0,
                                          logprobs=0, extra_body={"ignore_eos": True})
    assert penalised.choices[0].text != plain.choices[0].text  # greedy text repeats; penalties break that
    tokens = penalised.choices[0].logprobs.tokens  # type: ignore[union-attr]
    assert tokens is not None and len(tokens) == 12


def test_openai_n_choices_and_prompt_lists(server: ServerProcess) -> None:
    client = openai_client(server)
    chat = client.chat.completions.create(model="tiny", messages=HI, max_tokens=4, n=3, temperature=1, seed=7)
    assert [c.index for c in chat.choices] == [0, 1, 2]
    many = client.completions.create(model="tiny", prompt=["One", "Two two"], max_tokens=2, temperature=0)
    assert [c.index for c in many.choices] == [0, 1]
    ids = client.completions.create(model="tiny", prompt=[[72, 101], [5]], max_tokens=2, temperature=0)
    assert ids.usage is not None and ids.usage.prompt_tokens == 3


def test_openai_error_classes_and_headers(server: ServerProcess) -> None:
    client = openai_client(server)
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(model="tiny", messages=HI, tool_choice="required", tools=[
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
    assert tools.value.param == "tools" and "not supported" in tools.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": WORDS}])
    assert too_long.value.code == "context_length_exceeded"
    assert "maximum context length" in too_long.value.message
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=HI)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0).models.list()
    assert client.models.retrieve("tiny").id == "tiny"
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=HI, max_tokens=1,
                                                           extra_headers={"X-Request-Id": "trace-7"})
    assert raw.headers["x-request-id"] == "trace-7" and raw.parse()._request_id == "trace-7"
    assert client.chat.completions.create(model="tiny", messages=HI, max_tokens=1)._request_id


def test_openai_retries_a_429_after_retry_after(one_slot: ServerProcess) -> None:
    wait_idle(one_slot)
    occupied = Occupied(one_slot)
    try:
        with pytest.raises(openai.RateLimitError):
            openai_client(one_slot).completions.create(model="tiny", prompt="x", max_tokens=1)
        refused = metric(one_slot.base_url, "servestack_requests_rejected_total", reason="queue_full")
        timer = occupied.release_after(1.5)
        started = time.monotonic()
        done = openai_client(one_slot, max_retries=5).completions.create(model="tiny", prompt="x", max_tokens=1)
        timer.join()
    finally:
        occupied.release()
    assert done.choices[0].text is not None
    assert time.monotonic() - started >= 1.0  # it waited Retry-After before trying again
    assert metric(one_slot.base_url, "servestack_requests_rejected_total", reason="queue_full") > refused


def test_openai_does_not_retry_a_504(one_slot: ServerProcess) -> None:
    wait_idle(one_slot)
    before = http_count(one_slot, 504)
    with pytest.raises(openai.InternalServerError) as timeout:
        openai_client(one_slot, max_retries=3).completions.create(model="tiny", prompt="x", max_tokens=30000,
                                                                   extra_body={"ignore_eos": True})
    assert timeout.value.status_code == 504
    assert http_count(one_slot, 504) == before + 1  # sent once, not four times


# --- langchain-openai ----------------------------------------------------------------------------------


def chat_model(server: ServerProcess, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="tiny", base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0,
                      **{"max_tokens": 6, "temperature": 0, **options})


def test_langchain_invoke_stream_batch_and_logprobs(server: ServerProcess) -> None:
    model = chat_model(server, stream_usage=True)
    whole = model.invoke("Hello there")
    assert whole.usage_metadata is not None and whole.usage_metadata["input_tokens"] > 0
    streamed = list(model.stream("Hello there"))
    assert "".join(str(chunk.content) for chunk in streamed) == whole.content
    batch = model.batch(["One", "Two", "One"])
    assert batch[0].content == batch[2].content == model.invoke("One").content
    with_logprobs = chat_model(server, logprobs=True).invoke("Hello there")
    assert len(with_logprobs.response_metadata["logprobs"]["content"]) == \
        with_logprobs.response_metadata["token_usage"]["completion_tokens"]


def test_langchain_tools_and_structured_output_are_refused_not_ignored(server: ServerProcess) -> None:
    class Weather(BaseModel):
        city: str

    model = chat_model(server)
    with pytest.raises(openai.BadRequestError, match="tool calling is not supported"):
        model.bind_tools([Weather], tool_choice="required").invoke("Weather in Paris?")
    with pytest.raises(openai.BadRequestError, match="response format"):
        model.with_structured_output(Weather, method="json_schema").invoke("Weather in Paris?")
    with pytest.raises(openai.BadRequestError, match="tool calling is not supported"):
        model.with_structured_output(Weather, method="function_calling").invoke("Weather in Paris?")


def test_langchain_legacy_llm_batches_prompts_in_one_request(server: ServerProcess) -> None:
    from langchain_openai import OpenAI

    llm = OpenAI(model="tiny", base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0,
                 max_tokens=3, temperature=0)
    answers = llm.batch(["One", "Two", "Three"])
    assert len(answers) == 3 and answers[0] == llm.invoke("One")


def test_langchain_context_window_error(server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        chat_model(server).invoke(WORDS)


# --- litellm -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Any:
    import litellm

    litellm.telemetry = False
    return litellm


@pytest.mark.parametrize("prefix", ["openai", "hosted_vllm"])
def test_litellm_completion_stream_and_text_completion(litellm: Any, server: ServerProcess, prefix: str) -> None:
    options = {"model": f"{prefix}/tiny", "api_base": f"{server.base_url}/v1", "api_key": API_KEY}
    whole = litellm.completion(messages=HI, max_tokens=5, temperature=0, **options)
    streamed = litellm.completion(messages=HI, max_tokens=5, temperature=0, stream=True,
                                  stream_options={"include_usage": True}, **options)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == whole.choices[0].message.content
    assert whole.usage.completion_tokens <= 5
    completion = litellm.text_completion(prompt="Once upon", max_tokens=4, temperature=0, **options)
    assert completion.choices[0].text is not None
    logprobs = litellm.completion(messages=HI, max_tokens=3, temperature=0, logprobs=True, top_logprobs=1,
                                  **options)
    assert len(logprobs.choices[0].logprobs["content"]) == logprobs.usage.completion_tokens


@pytest.mark.parametrize("prefix", ["openai", "hosted_vllm"])
def test_litellm_error_classes(litellm: Any, server: ServerProcess, prefix: str) -> None:
    options = {"model": f"{prefix}/tiny", "api_base": f"{server.base_url}/v1", "api_key": API_KEY}
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.completion(messages=[{"role": "user", "content": WORDS}], **options)
    with pytest.raises(litellm.BadRequestError, match="not supported"):
        litellm.completion(messages=HI, response_format={"type": "json_object"}, **options)
    with pytest.raises(litellm.NotFoundError):
        litellm.completion(messages=HI, **{**options, "model": f"{prefix}/gpt-9"})
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(messages=HI, **{**options, "api_key": "wrong"})


def test_litellm_retries_a_429(litellm: Any, one_slot: ServerProcess) -> None:
    wait_idle(one_slot)
    options = {"model": "openai/tiny", "api_base": f"{one_slot.base_url}/v1", "api_key": API_KEY}
    occupied = Occupied(one_slot)
    try:
        with pytest.raises(litellm.RateLimitError):
            litellm.completion(messages=HI, max_tokens=1, num_retries=0, **options)
        timer = occupied.release_after(1.5)
        done = litellm.completion(messages=HI, max_tokens=1, num_retries=5, **options)
        timer.join()
    finally:
        occupied.release()
    assert done.choices[0].finish_reason in ("length", "stop")
