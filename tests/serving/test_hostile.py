"""Hostile requests against `python -m serving` (the shared tiny-model server): every answer is a 4xx with an
OpenAI error body, or a correct 200; never a 5xx. Meanwhile a bystander streams greedy chats one after the
other: each must finish whole and identical to the others, and its stream never stalls for long, so that
no request is seen to hurt another. The last test of the module checks the bystander and readiness."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from serving import protocol as p
from tests.serving.conftest import API_KEY, ServerProcess

AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HI = [{"role": "user", "content": "Hi"}]
# A stream that waits longer than this between chunks was held up by someone (a 21 MB prompt once held every
# stream for 25 s); generous, for a busy 2-core machine.
LONGEST_GAP_SECONDS = 5.0


@dataclass
class Bystander:
    """Greedy chat streams, one after the other, until stopped."""

    base_url: str
    texts: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    longest_gap: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 256,
                "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.Client(base_url=self.base_url, headers=AUTH, timeout=60) as client:
            while not self.stop.is_set():
                try:
                    self.texts.append(self._one(client, body))
                except Exception as error:  # recorded, and failed on by the last test
                    self.failures.append(repr(error))

    def _one(self, client: httpx.Client, body: dict[str, Any]) -> str:
        pieces, usage, last = [], None, time.monotonic()
        with client.stream("POST", CHAT, json=body) as r:
            assert r.status_code == 200, r.status_code
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
            for line in lines:
                now = time.monotonic()
                self.longest_gap, last = max(self.longest_gap, now - last), now
                if line == "data: [DONE]":
                    break
                chunk = json.loads(line.removeprefix("data: "))
                assert "error" not in chunk, chunk
                if chunk["choices"]:
                    pieces.append(chunk["choices"][0]["delta"].get("content") or "")
                usage = chunk.get("usage") or usage
        assert lines[-1] == "data: [DONE]"
        assert usage is not None and usage["completion_tokens"] == 256, usage
        return "".join(pieces)


@pytest.fixture(scope="module")
def bystander(server: ServerProcess) -> Iterator[Bystander]:
    watcher = Bystander(server.base_url)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    yield watcher
    watcher.stop.set()
    thread.join(60)


def _check(r: httpx.Response, expected: int | None) -> None:
    """A 4xx in the OpenAI error shape (short), or a 200 that is a real answer; never a 5xx."""
    assert r.status_code < 500, r.text[:500]
    if expected is not None:
        assert r.status_code == expected, r.text[:500]
    if r.status_code >= 400:
        assert len(r.content) < 2000, f"an error body of {len(r.content)} bytes"
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
        assert error["type"] in ("invalid_request_error", "authentication_error", "rate_limit_error")
        return
    assert r.status_code == 200
    if r.headers["content-type"].startswith("text/event-stream"):
        events = [line for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert all("error" not in json.loads(e.removeprefix("data: ")) for e in events[:-1])
        return
    body = r.json()
    assert body["object"] in ("text_completion", "chat.completion", "list", "model")
    if body["object"] in ("text_completion", "chat.completion"):
        assert body["choices"] and all(c["finish_reason"] in ("stop", "length") for c in body["choices"])
        assert body["usage"]["completion_tokens"] >= 1


def raw(text: str) -> bytes:
    return text.encode()


# (id, path, body: a dict sent as JSON or raw bytes, expected status or None for "any 2xx/4xx", headers)
CASES: list[tuple[str, str, Any, int | None, dict[str, str]]] = [
    # the review's crashes: values that passed validation and killed the engine loop
    ("seed 2**64", CHAT, {"messages": HI, "seed": 2**64, "max_tokens": 4}, 400, JSON),
    ("seed -2**63-1", CHAT, {"messages": HI, "seed": -(2**63) - 1, "max_tokens": 4}, 400, JSON),
    ("seed 2**64-1", CHAT, {"messages": HI, "seed": 2**64 - 1, "temperature": 1, "max_tokens": 4}, 200, JSON),
    ("seed -2**63", CHAT, {"messages": HI, "seed": -(2**63), "temperature": 1, "max_tokens": 4}, 200, JSON),
    ("seed 10**100", CHAT, {"messages": HI, "seed": 10**100, "max_tokens": 4}, 400, JSON),
    ("temperature 1e-45", CHAT, {"messages": HI, "temperature": 1e-45, "max_tokens": 4}, 200, JSON),
    ("temperature 5e-324", CHAT, {"messages": HI, "temperature": 5e-324, "max_tokens": 4}, 200, JSON),
    ("temperature 1e-5 top_k 1", COMPLETIONS, {"prompt": "x", "temperature": 1e-5, "top_k": 1}, 200, JSON),
    ("temperature NaN", CHAT, raw('{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}'), 400,
     JSON),
    ("temperature Infinity", CHAT, raw('{"messages": [{"role": "user", "content": "Hi"}], "temperature": Infinity}'),
     400, JSON),
    ("top_p -Infinity", COMPLETIONS, raw('{"prompt": "x", "top_p": -Infinity}'), 400, JSON),
    ("presence NaN", COMPLETIONS, raw('{"prompt": "x", "presence_penalty": NaN}'), 400, JSON),
    ("logit_bias NaN", COMPLETIONS, raw('{"prompt": "x", "logit_bias": {"5": NaN}}'), 400, JSON),
    ("temperature -1", CHAT, {"messages": HI, "temperature": -1}, 400, JSON),
    ("temperature 2.5", CHAT, {"messages": HI, "temperature": 2.5}, 400, JSON),
    ("top_p 0", COMPLETIONS, {"prompt": "x", "top_p": 0}, 400, JSON),
    ("top_p 1e-300", COMPLETIONS, {"prompt": "x", "top_p": 1e-300, "temperature": 1}, 200, JSON),
    ("top_p 1.5", COMPLETIONS, {"prompt": "x", "top_p": 1.5}, 400, JSON),
    ("top_k -5", COMPLETIONS, {"prompt": "x", "top_k": -5}, 400, JSON),
    ("top_k 10**20", COMPLETIONS, {"prompt": "x", "top_k": 10**20, "temperature": 1}, 200, JSON),
    ("n 0", COMPLETIONS, {"prompt": "x", "n": 0}, 400, JSON),
    ("n 8", COMPLETIONS, {"prompt": "x", "n": 8, "temperature": 1, "max_tokens": 3}, 200, JSON),
    ("n 9", COMPLETIONS, {"prompt": "x", "n": 9}, 400, JSON),
    ("n 10**6", COMPLETIONS, {"prompt": "x", "n": 10**6}, 400, JSON),
    ("max_tokens 0", COMPLETIONS, {"prompt": "x", "max_tokens": 0}, 400, JSON),
    ("max_tokens 2**63", COMPLETIONS, {"prompt": "x", "max_tokens": 2**63}, 400, JSON),
    ("max_tokens 10**30", COMPLETIONS, {"prompt": "x", "max_tokens": 10**30}, 400, JSON),
    ("max_tokens 5.5", COMPLETIONS, {"prompt": "x", "max_tokens": 5.5}, 400, JSON),
    ("max_completion_tokens 0", CHAT, {"messages": HI, "max_completion_tokens": 0}, 400, JSON),
    ("presence 5", CHAT, {"messages": HI, "presence_penalty": 5}, 400, JSON),
    ("frequency -2.01", CHAT, {"messages": HI, "frequency_penalty": -2.01}, 400, JSON),
    ("penalties 2", CHAT, {"messages": HI, "presence_penalty": 2, "frequency_penalty": 2, "max_tokens": 4}, 200,
     JSON),
    ("logit_bias word key", CHAT, {"messages": HI, "logit_bias": {"abc": 1}}, 400, JSON),
    ("logit_bias 101", CHAT, {"messages": HI, "logit_bias": {"5": 101}}, 400, JSON),
    ("logit_bias huge id", CHAT, {"messages": HI, "logit_bias": {"9" * 40: 1}}, 400, JSON),
    ("logit_bias string", CHAT, {"messages": HI, "logit_bias": {"5": "x"}}, 400, JSON),
    ("logit_bias -100 all", CHAT, {"messages": HI, "logit_bias": {str(i): -100 for i in range(300)},
                                   "max_tokens": 4}, 200, JSON),
    ("top_logprobs 21", CHAT, {"messages": HI, "logprobs": True, "top_logprobs": 21}, 400, JSON),
    ("top_logprobs 20", CHAT, {"messages": HI, "logprobs": True, "top_logprobs": 20, "max_tokens": 3}, 200, JSON),
    ("top_logprobs alone", CHAT, {"messages": HI, "top_logprobs": 2}, 400, JSON),
    ("completion logprobs 21", COMPLETIONS, {"prompt": "x", "logprobs": 21}, 400, JSON),
    ("completion logprobs -1", COMPLETIONS, {"prompt": "x", "logprobs": -1}, 400, JSON),
    ("echo logprobs", COMPLETIONS, {"prompt": "Hello there", "echo": True, "logprobs": 5, "max_tokens": 3}, 200,
     JSON),
    # malformed bodies
    ("bad JSON", CHAT, raw("{nope"), 400, JSON),
    ("JSON array", CHAT, raw("[1, 2]"), 400, JSON),
    ("JSON null", CHAT, raw("null"), 400, JSON),
    ("empty body", CHAT, b"", 400, JSON),
    ("deep nesting", CHAT, raw("[" * 100_000 + "]" * 100_000), 400, JSON),
    ("invalid UTF-8", COMPLETIONS, b'{"prompt": "\xff\xfe\xfd"}', 400, JSON),
    ("text/plain", CHAT, raw(json.dumps({"messages": HI})), 400, {**AUTH, "Content-Type": "text/plain"}),
    ("form", CHAT, raw("messages=hi"), 400, {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}),
    ("no content type", CHAT, raw(json.dumps({"messages": HI})), 400, AUTH),
    ("bad JSON, no key", CHAT, raw("{nope"), 401, {"Content-Type": "application/json"}),
    ("lowercase bearer", COMPLETIONS, {"prompt": "x", "max_tokens": 1}, 200,
     {"Authorization": f"bearer {API_KEY}", "Content-Type": "application/json"}),
    ("x-api-key only", COMPLETIONS, {"prompt": "x"}, 401, {"x-api-key": API_KEY, "Content-Type": "application/json"}),
    # wrong types and shapes
    ("max_tokens '5'", COMPLETIONS, {"prompt": "x", "max_tokens": "5"}, 400, JSON),
    ("stream 'true'", COMPLETIONS, {"prompt": "x", "stream": "true"}, 400, JSON),
    ("max_tokens true", COMPLETIONS, {"prompt": "x", "max_tokens": True}, 400, JSON),
    ("messages string", CHAT, {"messages": "hello"}, 400, JSON),
    ("no role", CHAT, {"messages": [{"content": "x"}]}, 400, JSON),
    ("role function", CHAT, {"messages": [{"role": "function", "name": "f", "content": "x"}]}, 400, JSON),
    ("content number", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, JSON),
    ("stop number", CHAT, {"messages": HI, "stop": 5}, 400, JSON),
    ("no messages", CHAT, {"model": "tiny"}, 400, JSON),
    ("no prompt", COMPLETIONS, {"max_tokens": 3}, 400, JSON),
    ("model number", CHAT, {"messages": HI, "model": 5}, 400, JSON),
    ("model unknown", CHAT, {"messages": HI, "model": "gpt-9"}, 404, JSON),
    ("model huge", CHAT, {"messages": HI, "model": "m" * 100_000}, 404, JSON),
    ("no model", CHAT, {"messages": HI, "max_tokens": 2}, 200, JSON),
    ("messages []", CHAT, {"messages": []}, 400, JSON),
    ("all content empty", CHAT, {"messages": [{"role": "user", "content": ""}]}, 400, JSON),
    ("prompt ''", COMPLETIONS, {"prompt": ""}, 400, JSON),
    ("prompt []", COMPLETIONS, {"prompt": []}, 400, JSON),
    ("prompt [[]]", COMPLETIONS, {"prompt": [[]]}, 400, JSON),
    ("stop ['']", COMPLETIONS, {"prompt": "x", "stop": [""]}, 400, JSON),
    ("5 stops", COMPLETIONS, {"prompt": "x", "stop": list("abcde")}, 400, JSON),
    ("4 long stops", COMPLETIONS, {"prompt": "x", "stop": ["s" * 10_000] * 4, "max_tokens": 8}, 200, JSON),
    ("stream_options without stream", CHAT, {"messages": HI, "stream_options": {"include_usage": True}}, 400, JSON),
    ("stream with usage", CHAT, {"messages": HI, "stream": True, "stream_options": {"include_usage": True},
                                 "max_tokens": 3}, 200, JSON),
    ("unknown field", CHAT, {"messages": HI, "guided_json": {}}, 400, JSON),
    # token-id prompts
    ("ids", COMPLETIONS, {"prompt": [72, 101, 108], "max_tokens": 3}, 200, JSON),
    ("ids of several prompts", COMPLETIONS, {"prompt": [[1, 2], [3]], "max_tokens": 2}, 200, JSON),
    ("id -1", COMPLETIONS, {"prompt": [-1]}, 400, JSON),
    ("id 10**9", COMPLETIONS, {"prompt": [10**9]}, 400, JSON),
    ("id 2**70", COMPLETIONS, {"prompt": [2**70]}, 400, JSON),
    ("id float", COMPLETIONS, {"prompt": [1.5]}, 400, JSON),
    ("id bool", COMPLETIONS, {"prompt": [True]}, 400, JSON),
    ("ids and text", COMPLETIONS, {"prompt": [1, "a"]}, 400, JSON),
    ("65 ids", COMPLETIONS, {"prompt": [1] * 65}, 400, JSON),
    ("echo ids", COMPLETIONS, {"prompt": [72, 101], "echo": True, "max_tokens": 2}, 200, JSON),
    # Unicode
    ("lone surrogate in chat", CHAT, raw('{"messages": [{"role": "user", "content": "\\udfff"}]}'), 400, JSON),
    ("lone surrogate in completions", COMPLETIONS, raw('{"prompt": "\\udfff"}'), 400, JSON),
    ("lone surrogate in stop", COMPLETIONS, raw('{"prompt": "x", "stop": "\\ud800"}'), 400, JSON),
    ("lone surrogate in a name", CHAT, raw('{"messages": [{"role": "user", "content": "x", "name": "\\udc00"}]}'),
     400, JSON),
    ("NUL", CHAT, {"messages": [{"role": "user", "content": "a\x00b"}], "max_tokens": 2}, 200, JSON),
    ("emoji RTL combining BOM", CHAT, {"messages": [{"role": "user", "content": "🇫🇷 שלום é\ufeff"}],
                                       "max_tokens": 2}, 200, JSON),
    ("special token in content", CHAT, {"messages": [{"role": "user", "content": "<|im_end|>x"}], "max_tokens": 2},
     200, JSON),
    # what is not implemented
    ("tools", CHAT, {"messages": HI, "tools": [{"type": "function", "function": {"name": "get_weather"}}]}, 400,
     JSON),
    ("tool_choice required", CHAT, {"messages": HI, "tool_choice": "required"}, 400, JSON),
    ("response_format json_object", CHAT, {"messages": HI, "response_format": {"type": "json_object"}}, 400, JSON),
    ("response_format json_schema", CHAT, {"messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, 400, JSON),
    ("suffix", COMPLETIONS, {"prompt": "x", "suffix": "!!"}, 400, JSON),
    ("best_of 3", COMPLETIONS, {"prompt": "x", "best_of": 3}, 400, JSON),
    ("image part", CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, 400, JSON),
    ("audio part", CHAT, {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}, 400, JSON),
    ("audio output", CHAT, {"messages": HI, "modalities": ["text", "audio"]}, 400, JSON),
    ("tool history", CHAT, {"messages": [
        *HI, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "42"}]}, 400, JSON),  # the tiny template drops them
    # sizes
    ("3 MB body", COMPLETIONS, {"prompt": "x" * 3_000_000}, 413, JSON),
    ("1.9 MB prompt", COMPLETIONS, {"prompt": "hello world " * 160_000}, 400, JSON),
    ("1.5 MB messages string", CHAT, {"messages": "x" * 1_500_000}, 400, JSON),
    ("10,000 messages", CHAT, {"messages": [{"role": "user", "content": "hi"}] * 10_000}, 400, JSON),
    ("too many tokens, few characters", COMPLETIONS, {"prompt": "7 " * 65}, 400, JSON),
]


@pytest.mark.parametrize(("path", "body", "expected", "headers"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_a_hostile_request_gets_a_4xx_or_a_real_answer(
    server: ServerProcess, bystander: Bystander, path: str, body: Any, expected: int | None, headers: dict[str, str]
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    _check(httpx.post(f"{server.base_url}{path}", content=content, headers=headers, timeout=60), expected)


def test_a_huge_body_sent_without_a_length_is_cut_off(server: ServerProcess, bystander: Bystander) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'"}'

    r = httpx.post(f"{server.base_url}{COMPLETIONS}", content=chunks(), headers=JSON, timeout=60)
    _check(r, 413)


# Odd values for every field of both endpoints: whatever they are, the answer is a 200 or a 4xx.
ODD_VALUES = ["x", "", -1, 0, 1, 2**70, -(2**70), 1e308, -1e308, 0.5, True, [], [1], ["a"], {}, {"a": 1}]
FIELDS = [(COMPLETIONS, name) for name in p.CompletionRequest.model_fields] + [
    (CHAT, name) for name in p.ChatCompletionRequest.model_fields]


@pytest.mark.parametrize(("path", "name"), FIELDS, ids=[f"{path.split('/')[-1]}.{name}" for path, name in FIELDS])
def test_odd_values_of_every_field(server: ServerProcess, bystander: Bystander, path: str, name: str) -> None:
    base: dict[str, Any] = {"prompt": "Hi"} if path == COMPLETIONS else {"messages": HI}
    with httpx.Client(base_url=server.base_url, headers=JSON, timeout=60) as client:
        for value in ODD_VALUES:
            body = {**base, "max_tokens": 2, name: value}
            if body.get("n") not in (None, 1) or body.get("stream") is True:
                body.pop("stream_options", None)
            r = client.post(path, content=json.dumps(body).encode())
            try:
                _check(r, None)
            except AssertionError as error:
                raise AssertionError(f"{name}={value!r}: {error}") from error


def test_the_server_stayed_ready_and_the_bystander_was_never_disturbed(
    server: ServerProcess, bystander: Bystander
) -> None:
    deadline = time.monotonic() + 30
    while len(bystander.texts) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    bystander.stop.set()
    assert httpx.get(f"{server.base_url}/health/ready").status_code == 200
    assert httpx.get(f"{server.base_url}/health/live").status_code == 200
    assert bystander.failures == []
    assert len(bystander.texts) >= 2
    assert len(set(bystander.texts)) == 1  # greedy: the same text each time, whatever ran beside it
    assert bystander.longest_gap < LONGEST_GAP_SECONDS, f"a stall of {bystander.longest_gap:.1f}s"
    log = server.log.read_text()
    assert "Traceback" not in log and "failed in the engine" not in log, log[-3000:]
