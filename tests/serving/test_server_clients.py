"""Clients' keys and limits, the metrics port and the model revision, against real `python -m serving`
processes: two replicas sharing a real limits store (valkey-server), and a keys file rotated as the kubelet
rotates a mounted Secret."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving import manifest
from serving.keys import digest
from tests.serving.conftest import ServerProcess, free_port, metric

WEB, BATCH, SMALL = "key-of-web", "key-of-batch", "key-of-small"


def _keys(*clients: tuple[str, str, int, int]) -> str:
    return json.dumps({"clients": [{"client": c, "sha256": digest(k), "requestsPerMinute": rpm,
                                    "tokensPerMinute": tpm} for c, k, rpm, tpm in clients]})


class MountedSecret:
    """A Secret volume as the kubelet keeps it: the file is a symlink through `..data`, swapped atomically."""

    def __init__(self, root: Path) -> None:
        self.root, self.generation = root, 0
        root.mkdir(parents=True, exist_ok=True)

    def write(self, text: str) -> Path:
        self.generation += 1
        version = self.root / f"..2026_11_29_{self.generation:04d}"
        version.mkdir()
        (version / "api-keys.json").write_text(text)
        (self.root / "..data_tmp").symlink_to(version.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")
        target = self.root / "api-keys.json"
        if not target.is_symlink():
            target.symlink_to("..data/api-keys.json")
        return target


def _complete(server: ServerProcess, key: str, max_tokens: int = 4) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"prompt": "the quick brown", "max_tokens": max_tokens, "temperature": 0}, timeout=60)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[MountedSecret, Path]:
    secret = MountedSecret(tmp_path_factory.mktemp("secret") / "api-keys")
    path = secret.write(_keys(("web", WEB, 1000, 0), ("batch", BATCH, 3, 0), ("small", SMALL, 0, 10)))
    return secret, path


@dataclass(frozen=True)
class Replica:
    server: ServerProcess
    metrics_url: str


@pytest.fixture(scope="module")
def replicas(start_server: Callable[..., ServerProcess], keys_file: tuple[MountedSecret, Path],
             limits_store: str) -> list[Replica]:
    """Two replicas as a Deployment runs them: the same keys file, one limits store, metrics on their own port."""
    _, path = keys_file
    started = []
    for _ in range(2):
        port = free_port()
        server = start_server(SERVESTACK_API_KEYS_FILE=str(path), SERVESTACK_LIMITS_STORE_URL=limits_store,
                              SERVESTACK_METRICS_PORT=str(port))
        started.append(Replica(server, f"http://127.0.0.1:{port}"))
    return started


def test_each_client_gets_in_with_its_own_key_only(replicas: list[Replica]) -> None:
    for server in (r.server for r in replicas):
        assert _complete(server, WEB).status_code == 200
        refused = _complete(server, "key-of-nobody")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_a_limit_holds_across_replicas(replicas: list[Replica]) -> None:
    """batch may send 3 requests a minute, whichever replica takes them."""
    if time.time() % 60 > 50:  # not across a minute's boundary, where the count starts again
        time.sleep(61 - time.time() % 60)
    answers = [_complete(replicas[i % 2].server, BATCH) for i in range(4)]
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 200, 429]
    refused = answers[3]
    assert refused.json()["error"] == {
        "message": refused.json()["error"]["message"], "type": "requests", "param": None,
        "code": "rate_limit_exceeded"}
    assert refused.json()["error"]["message"].startswith("Rate limit reached on requests per min (RPM): Limit 3")
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    # Other clients are not held by batch's limit.
    assert _complete(replicas[1].server, WEB).status_code == 200


def test_tokens_count_when_answers_end(replicas: list[Replica]) -> None:
    """small may use 10 tokens a minute: its first answer (prompt and completion) passes it, the next waits."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    first = _complete(replicas[0].server, SMALL, max_tokens=8)
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] >= 10
    deadline = time.monotonic() + 5  # the charge is written in the background, after the answer
    while (second := _complete(replicas[1].server, SMALL)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "tokens"


def test_metrics_are_on_their_own_port_and_name_clients_not_keys(replicas: list[Replica]) -> None:
    assert httpx.get(f"{replicas[0].server.base_url}/metrics", timeout=5).status_code == 404
    text = httpx.get(f"{replicas[0].metrics_url}/metrics", timeout=5).text
    assert 'servestack_client_requests_total{client="web"' in text
    limited = sum(metric(r.metrics_url, "servestack_rate_limited_total", client="batch", limit="requests")
                  for r in replicas)
    assert limited == 1
    assert WEB not in text and digest(WEB) not in text


def test_a_rotation_reaches_running_replicas_without_a_restart(replicas: list[Replica],
                                                                keys_file: tuple[MountedSecret, Path]) -> None:
    secret, _ = keys_file
    servers = [r.server for r in replicas]
    pids = [s.process.pid for s in servers]
    secret.write(_keys(("web", "rotated-key-of-web", 1000, 0), ("batch", BATCH, 3, 0), ("small", SMALL, 0, 10)))
    deadline = time.monotonic() + 10
    while _complete(servers[0], "rotated-key-of-web").status_code == 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    for server in servers:
        assert _complete(server, "rotated-key-of-web").status_code == 200
        assert _complete(server, WEB).status_code == 401
    assert [s.process.pid for s in servers] == pids and all(s.process.poll() is None for s in servers)


def test_a_model_of_another_revision_is_refused_at_start(start_server: Callable[..., ServerProcess],
                                                         tiny_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model, model)
    manifest.write(manifest.build(model, "tiny", "r1"), model)
    refused = start_server(wait=False, MODEL_PATH=str(model), SERVESTACK_MODEL_NAME="tiny",
                           SERVESTACK_MODEL_REVISION="r2")
    assert refused.process.wait(timeout=60) == 2
    log = refused.log.read_text()
    assert "servestack: refusing to serve:" in log and "'r1'" in log and "'r2'" in log
    served = start_server(MODEL_PATH=str(model), SERVESTACK_MODEL_NAME="tiny", SERVESTACK_MODEL_REVISION="r1",
                          SERVESTACK_API_KEY="k")
    assert 'revision="r1"' in httpx.get(f"{served.base_url}/metrics", timeout=5).text
