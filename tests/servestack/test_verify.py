"""`servestack verify` end to end against a real `python -m serving` with the tiny model on 127.0.0.1: the
endpoint given or read from the stack's outputs (through the stand-in `pulumi`), at the end of `up`, the
measurement `servestack compare` then shows; and endpoints that never become ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

import servestack.cli
from servestack.cli import main
from servestack.compare import compare
from servestack.verify import WORKLOAD, VerifyError, target_from_outputs
from serving.bench import LoadResult, RequestResult
from serving.models import build_tiny
from tests.servestack.conftest import Pulumi, serve_http
from tests.serving.conftest import free_port, wait_ready

API_KEY = "sk-verify-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m serving` with the tiny model and one API key, as the container runs it: its base URL."""
    model = build_tiny(tmp_path_factory.mktemp("models") / "tiny")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "MODEL_PATH": str(model), "SERVESTACK_HOST": "127.0.0.1", "SERVESTACK_PORT": str(port),
           "SERVESTACK_API_KEY": API_KEY, "SERVESTACK_LOG_LEVEL": "warning", "SERVESTACK_TORCH_THREADS": "1",
           "SERVESTACK_MAX_BATCH_SIZE": "4"}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "serving"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=120, process=process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def local_plans(stack_plan: Callable[[str], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("plans")
    for stack in ("local", "aws-dev"):
        (directory / f"{stack}.json").write_text(json.dumps(stack_plan(stack)))
    return directory


def _check_measurement(path: Path, endpoint: str, client: str | None) -> dict[str, Any]:
    result = json.loads(path.read_text())
    assert result["stack"] == "local" and result["url"] == endpoint and result["source"] == "servestack verify"
    assert result["model"] == "tiny" and result["client"] == client
    assert result["completion"]["completion_tokens"] >= 1 and isinstance(result["completion"]["text"], str)
    assert result["workload"] == {"concurrency": [1, 4], "requests": 8, "input_len": 64, "output_len": 32}
    assert [level["concurrency"] for level in result["levels"]] == list(WORKLOAD.concurrency)
    for level in result["levels"]:
        # every request streamed its exact output length (ignore_eos), counted by the server's usage
        assert level["completed"] == 8 and level["errors"] == 0
        assert level["output_tokens"] == 8 * 32 and level["output_throughput"] > 0
        assert level["ttft"]["p50"] > 0
    return result


def test_verify_a_given_endpoint_and_compare_shows_the_measurement(
        server: str, local_plans: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    out = tmp_path / "verify"
    assert main(["verify", "--stack", "local", "--endpoint", f"{server}/v1", "--api-key-file", str(key_file),
                 "--timeout", "60", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ready: {server} serves tiny" in printed and "concurrency 4:" in printed
    result = _check_measurement(out / "local.json", server, None)

    rows = {row.estimate.stack: row for row in compare(local_plans, measured_dir=out)}
    measured = rows["local"].measured
    assert measured is not None and measured.source == str(out / "local.json")
    best = max(result["levels"], key=lambda level: level["output_throughput"])
    assert measured.output_throughput == best["output_throughput"]
    assert measured.ttft_p50_ms == best["ttft"]["p50"] and measured.concurrency == best["concurrency"]
    assert rows["aws-dev"].measured is None  # nobody measured it

    assert main(["compare", "--plans", str(local_plans), "--measured", str(out), "--out",
                 str(tmp_path / "compare")]) == 0
    stacks = json.loads((tmp_path / "compare" / "comparison.json").read_text())["stacks"]
    assert {s["stack"]: s["measured"] is not None for s in stacks} == {"aws-dev": False, "local": True}
    local = next(s for s in stacks if s["stack"] == "local")["measured"]
    assert local["kind"] == "measured" and local["output_throughput"] == best["output_throughput"]


def test_verify_reads_the_stacks_outputs_at_the_end_of_up(
        server: str, pulumi: Pulumi, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what `pulumi up` of the local stack exports: the endpoint, and each client's key as a secret
    pulumi.set_state(["local"], {"endpoint": {"value": server, "secret": False},
                                 "connect": {"value": "kubectl port-forward ...", "secret": False},
                                 "api_keys": {"value": {"dev": API_KEY}, "secret": True}})
    (home / ".kube").mkdir()
    (home / ".kube" / "config").write_text("apiVersion: v1\ncontexts:\n- name: kind-servestack\n  context: {}\n")
    monkeypatch.setattr(servestack.cli, "OUT_DIR", tmp_path / "out")
    assert main(["up", "--stack", "local", "--verify-timeout", "60"]) == 0
    argvs = pulumi.argvs()
    assert argvs[-2:] == [["--non-interactive", "stack", "output", "--json", "--stack", "local"],
                          ["--non-interactive", "stack", "output", "--json", "--show-secrets", "--stack", "local"]]
    _check_measurement(tmp_path / "out" / "verify" / "local.json", server, "dev")


def test_a_refused_key_fails_at_once(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SERVESTACK_API_KEY", "sk-wrong")
    assert main(["verify", "--stack", "local", "--endpoint", server, "--timeout", "60", "--out", str(tmp_path)]) == 1
    assert f"{server}/v1/models refused the key: HTTP 401" in capsys.readouterr().err
    assert not (tmp_path / "local.json").exists()


class _Unavailable(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def unavailable() -> Iterator[str]:
    """A port that accepts and answers 503, as a load balancer does before the pods are ready."""
    with serve_http(_Unavailable) as url:
        yield url


@pytest.mark.parametrize("kind", ["answers 503", "nothing listening"])
def test_an_endpoint_that_never_gets_ready_times_out_naming_it(kind: str, unavailable: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = unavailable if kind == "answers 503" else f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert main(["verify", "--stack", "local", "--endpoint", endpoint, "--timeout", "3", "--out",
                 str(tmp_path)]) == 1
    assert time.monotonic() - started < 3 + 5  # bounded: the timeout, a second for the last request, start-up
    err = capsys.readouterr().err
    last = "HTTP 503" if kind == "answers 503" else "ConnectError"
    assert f"verify local: {endpoint}/v1/models not ready after 3s (last: {last}" in err, err
    assert not (tmp_path / "local.json").exists()


def test_the_target_from_the_outputs() -> None:
    outputs = {"endpoint": {"value": "https://llm.example.com/", "secret": False},
               "api_keys": {"value": {"web": "sk-web", "batch": "sk-batch"}, "secret": True}}
    first = target_from_outputs("aws-dev", outputs, None)
    assert (first.endpoint, first.client, first.api_key) == ("https://llm.example.com", "web", "sk-web")
    assert target_from_outputs("aws-dev", outputs, "batch").api_key == "sk-batch"
    with pytest.raises(VerifyError, match=r"--client 'nobody': stack aws-dev has no key for that client; its "
                                          r"clients: web, batch") as unknown:
        target_from_outputs("aws-dev", outputs, "nobody")
    assert unknown.value.code == 2
    with pytest.raises(VerifyError, match=r"stack aws-dev has no `endpoint` output \(yet\)"):
        target_from_outputs("aws-dev", {"endpoint": {"value": "", "secret": False}}, None)


def test_make_runs_local_server_figures_reach_compare_as_the_local_stacks_measurement(
        local_plans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # serving.sidebyside's (b): our server over HTTP, measured by serving.bench's load generator
    results = [RequestResult(ok=True, ttft=0.2 + 0.01 * i, latency=4.0, output_tokens=128) for i in range(16)]
    server_level = LoadResult(16, 16, 64, 128, None, 5.0, results).to_dict()
    sidebyside = {"model": "smollm2", "date": "2026-11-29T23:00:00+00:00", "machine": {"cores": 2},
                  "workload": {"concurrency": 16, "requests": 16, "input_len": 64, "output_len": 128},
                  "results": {"server": server_level}}
    monkeypatch.setattr(servestack.cli, "OUT_DIR", tmp_path)
    servestack.cli._measured_locally(sidebyside)
    recorded = json.loads((tmp_path / "verify" / "local.json").read_text())
    assert recorded["source"] == "serving.sidebyside" and recorded["levels"] == [server_level]
    measured = {row.estimate.stack: row.measured for row in compare(local_plans, measured_dir=tmp_path / "verify")}
    local = measured["local"]
    assert local is not None and local.output_throughput == 16 * 128 / 5.0 == server_level["output_throughput"]
    assert local.ttft_p50_ms == server_level["ttft"]["p50"] and local.concurrency == 16
    assert measured["aws-dev"] is None
