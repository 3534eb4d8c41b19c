"""The server's log lines, from real `python -m serving` processes: one JSON object per line on stdout, a line
per /v1 request with its request id (the client's X-Request-ID or a new one, echoed in the response), client,
route, status, revision, tokens, TTFT, latency and finish reason; no prompt text unless
SERVESTACK_LOG_PROMPTS=true."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving import manifest
from serving.keys import digest
from tests.serving.conftest import ServerProcess, metric

WEB, SLOW = "key-of-web", "key-of-slow"
SECRET = "the-password-is-swordfish"  # in prompts: must never reach the log unless prompts are logged
BASE_FIELDS = {"time", "level", "severity", "logger", "message", "model", "revision"}
REQUEST_FIELDS = {"request_id", "client", "route", "method", "status", "latency_seconds", "prompt_tokens",
                  "completion_tokens", "ttft_seconds", "finish_reason"}


def _model(tiny_model: Path, root: Path) -> Path:
    model = root / "tiny-r7"
    shutil.copytree(tiny_model, model)
    manifest.write(manifest.build(model, "tiny", "r7"), model)
    return model


@pytest.fixture(scope="module")
def server(start_server: Callable[..., ServerProcess], tiny_model: Path,
           tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    root = tmp_path_factory.mktemp("logs")
    keys = root / "api-keys.json"
    keys.write_text(json.dumps({"clients": [
        {"client": "web", "sha256": digest(WEB), "requestsPerMinute": 1000, "tokensPerMinute": 0},
        {"client": "slow", "sha256": digest(SLOW), "requestsPerMinute": 1, "tokensPerMinute": 0}]}))
    return start_server(MODEL_PATH=str(_model(tiny_model, root)), SERVESTACK_MODEL_REVISION="r7",
                        SERVESTACK_API_KEYS_FILE=str(keys), SERVESTACK_LOG_LEVEL="info",
                        SERVESTACK_MAX_QUEUE="1", SERVESTACK_MAX_TOKENS="8000",
                        SERVESTACK_REQUEST_TIMEOUT_SECONDS="3")


def lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line the server wrote, each parsed as JSON (a line that is not JSON fails the test)."""
    parsed = []
    for number, line in enumerate(server.log.read_text().splitlines(), 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} of the server's output is not JSON: {line!r}")
    return parsed


def request_line(server: ServerProcess, request_id: str) -> dict[str, Any]:
    """The line of one request (written as the answer ends: the client may see the answer first)."""
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in lines(server) if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"{len(found)} lines of request {request_id}"
            return found[0]
        time.sleep(0.05)


def post(server: ServerProcess, path: str, body: dict[str, Any], key: str | None = WEB,
         request_id: str | None = None, timeout: float = 60) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if request_id:
        headers["X-Request-ID"] = request_id
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=timeout)


def test_a_completion_is_one_line_with_its_fields_and_the_given_request_id(server: ServerProcess) -> None:
    rid = f"test-{uuid.uuid4()}"
    answer = post(server, "/v1/completions", {"model": "tiny", "prompt": f"Hello {SECRET}", "max_tokens": 6,
                                              "temperature": 0, "ignore_eos": True}, request_id=rid)
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == rid
    line = request_line(server, rid)
    assert line.keys() >= BASE_FIELDS | REQUEST_FIELDS
    usage = answer.json()["usage"]
    assert {k: line[k] for k in ("level", "logger", "message", "model", "revision", "client", "route", "method",
                                 "status", "prompt_tokens", "completion_tokens", "finish_reason")} == {
        "level": "INFO", "logger": "serving.app", "message": "POST /v1/completions 200", "model": "tiny",
        "revision": "r7", "client": "web", "route": "/v1/completions", "method": "POST", "status": 200,
        "prompt_tokens": usage["prompt_tokens"], "completion_tokens": 6, "finish_reason": "length"}
    assert 0 < line["ttft_seconds"] <= line["latency_seconds"] < 60
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert "prompt" not in line


def test_a_stream_gets_a_new_request_id_echoed_and_logged_when_it_ends(server: ServerProcess) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": f"Hi {SECRET}"}], "max_tokens": 5,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {WEB}"}, timeout=60) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    usage = json.loads(events[-2])["usage"]
    line = request_line(server, rid)
    assert (line["route"], line["status"], line["client"], line["finish_reason"]) == \
        ("/v1/chat/completions", 200, "web", "length")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (usage["prompt_tokens"], 5)
    assert 0 < line["ttft_seconds"] <= line["latency_seconds"]


def test_an_unusable_request_id_is_replaced(server: ServerProcess) -> None:
    answer = httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": f"Bearer {WEB}",
                                                                "X-Request-ID": "has spaces"}, timeout=10)
    assert answer.status_code == 200
    rid = answer.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    line = request_line(server, rid)
    assert (line["route"], line["method"], line["status"], line["prompt_tokens"], line["finish_reason"]) == \
        ("/v1/models", "GET", 200, None, None)


@pytest.mark.parametrize(("key", "body", "status", "client"), [
    (None, {"prompt": "x"}, 401, None),  # no key: no client
    (WEB, {"prompt": "x", "max_tokens": 9000}, 400, "web"),  # over SERVESTACK_MAX_TOKENS
    (WEB, {"prompt": "x", "temperature": "hot"}, 400, "web"),  # a pydantic validation error
])
def test_refusals_are_logged_with_their_status_and_client(server: ServerProcess, key: str | None,
                                                          body: dict[str, Any], status: int,
                                                          client: str | None) -> None:
    rid = f"test-{uuid.uuid4()}"
    assert post(server, "/v1/completions", body, key=key, request_id=rid).status_code == status
    line = request_line(server, rid)
    assert (line["level"], line["status"], line["client"], line["route"]) == \
        ("INFO", status, client, "/v1/completions")
    assert (line["prompt_tokens"], line["completion_tokens"], line["ttft_seconds"], line["finish_reason"]) == \
        (None, None, None, None)


def test_a_client_over_its_limit_is_logged_as_429(server: ServerProcess) -> None:
    ids = [f"test-{uuid.uuid4()}" for _ in range(2)]
    statuses = [post(server, "/v1/completions", {"prompt": "x", "max_tokens": 1}, key=SLOW, request_id=rid)
                .status_code for rid in ids]
    assert statuses == [200, 429]
    line = request_line(server, ids[1])
    assert (line["status"], line["client"], line["finish_reason"]) == (429, "slow", None)


def test_a_timeout_is_logged_as_504_and_a_full_queue_as_429(server: ServerProcess) -> None:
    long_id, refused_id = f"long-{uuid.uuid4()}", f"refused-{uuid.uuid4()}"
    answers: dict[str, httpx.Response] = {}

    def long() -> None:
        answers["long"] = post(server, "/v1/completions", {"prompt": "a", "max_tokens": 7000, "ignore_eos": True},
                               request_id=long_id)

    thread = threading.Thread(target=long)
    thread.start()
    deadline = time.monotonic() + 10
    while metric(server.base_url, "servestack_num_requests_running") < 1:  # the queue of 1 is now full
        assert time.monotonic() < deadline, "the long request did not start"
        time.sleep(0.02)
    refused = post(server, "/v1/completions", {"prompt": "b", "max_tokens": 1}, request_id=refused_id)
    thread.join(60)
    assert refused.status_code == 429 and answers["long"].status_code == 504
    line = request_line(server, long_id)
    assert (line["level"], line["status"], line["client"], line["finish_reason"]) == \
        ("WARNING", 504, "web", "abort")  # a timeout cancels the choice, counted as its metric counts it
    assert line["prompt_tokens"] == 1 and 0 < line["completion_tokens"] < 7000
    assert 3 <= line["latency_seconds"] < 10
    assert request_line(server, refused_id)["status"] == 429


def test_every_line_is_json_and_no_prompt_is_logged(server: ServerProcess) -> None:
    post(server, "/v1/completions", {"prompt": SECRET, "max_tokens": 2})
    parsed = lines(server)
    assert all(line.keys() >= BASE_FIELDS for line in parsed)
    assert all(line["severity"] == line["level"] for line in parsed)  # what GKE's agent reads
    assert any(line["logger"] == "uvicorn.error" for line in parsed)  # uvicorn's own lines, in the same form
    assert any(line["logger"] == "serving.engine" for line in parsed)  # and the engine process's
    assert all(line["revision"] == "r7" for line in parsed)
    assert SECRET not in server.log.read_text()


def test_prompts_logged_on_request_in_the_text_form(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(SERVESTACK_LOG_PROMPTS="true", SERVESTACK_LOG_FORMAT="text",
                          SERVESTACK_LOG_LEVEL="info")
    rid = f"test-{uuid.uuid4()}"
    messages = [{"role": "user", "content": SECRET}]
    assert post(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 2}, key=None,
                request_id=rid).status_code == 200
    deadline = time.monotonic() + 10
    while rid not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [line for line in server.log.read_text().splitlines() if rid in line]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO serving\.app \[tiny@none\]: "
                    r"POST /v1/chat/completions 200 ", line), line
    assert f'request_id="{rid}"' in line and " status=200 " in line and ' finish_reason="' in line
    assert f'prompt={json.dumps(messages)}' in line
