"""Fixtures of the toolkit's tests: a home without credentials, and a stand-in `pulumi` first on PATH."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

STANDIN = Path(__file__).with_name("pulumi_standin.py")
CREDENTIAL_VARIABLES = re.compile(r"^(AWS_|GOOGLE_|CLOUDSDK_|ARM_|AZURE_|KUBECONFIG$|PULUMI_)")


@contextlib.contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on 127.0.0.1 from a thread, at the yielded base URL, until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Pulumi:
    """The stand-in's record and state."""

    def __init__(self, directory: Path) -> None:
        self.record = directory / "record.jsonl"
        self.state = directory / "state.json"

    def set_state(self, stacks: list[str], outputs: dict[str, Any] | None = None) -> None:
        self.state.write_text(json.dumps({"stacks": stacks, "outputs": outputs or {}}))

    def calls(self) -> list[dict[str, Any]]:
        if not self.record.is_file():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls()]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and no credentials in the environment: each test adds what it means to have."""
    for name in list(os.environ):
        if CREDENTIAL_VARIABLES.match(name):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def pulumi(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Pulumi:
    """The stand-in as `pulumi` first on PATH, with a backend login and AWS credentials."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable = bin_dir / "pulumi"
    executable.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(STANDIN)!r}, run_name='__main__')\n")
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    standin = Pulumi(tmp_path)
    monkeypatch.setenv("STANDIN_RECORD", str(standin.record))
    monkeypatch.setenv("STANDIN_STATE", str(standin.state))
    monkeypatch.setenv("PULUMI_ACCESS_TOKEN", "pul-test-token")
    monkeypatch.setenv("AWS_PROFILE", "servestack-dev")
    return standin


