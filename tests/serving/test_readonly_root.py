"""`python -m serving` on a read-only root filesystem, as the Deployment runs it (readOnlyRootFilesystem, one
writable emptyDir named by the environment, /dev/shm in memory, the model directory read-only).

The test makes that filesystem with a private mount namespace (util-linux `unshare`, as root), for the
server process only: a fresh tmpfs is mounted for the writable directory, then `/` and `/tmp` (the
checkout, the virtualenv and the model included) are remounted read-only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import ServerProcess, free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]

# Inside the namespace: mount, prove that nothing else is writable, then become the server (exec keeps the
# pid, so the test's SIGTERM reaches the server itself).
_PREPARE = """
set -e
mount -t tmpfs -o size=512m tmpfs "$WRITABLE"
mount -o remount,bind,ro /
if mountpoint -q /tmp; then mount -o remount,bind,ro /tmp; fi
for probe in /servestack-probe /tmp/servestack-probe "$MODEL_PATH/servestack-probe" "$REPO/servestack-probe"; do
    if touch "$probe" 2>/dev/null; then echo "$probe is writable" >&2; exit 97; fi
done
exec "$@"
"""


def _mount_namespaces_available() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _mount_namespaces_available(),
                                reason="needs root and util-linux unshare for a private mount namespace")


def test_the_server_serves_and_drains_on_a_read_only_root(tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    writable = tmp_path / "writable"  # the pod's emptyDir
    writable.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_", "TMPDIR", "TORCH"))}
    env |= {"WRITABLE": str(writable), "REPO": str(REPO), "MODEL_PATH": str(tiny_model),
            "SERVESTACK_MODEL_NAME": "tiny", "SERVESTACK_HOST": "127.0.0.1", "SERVESTACK_PORT": str(port),
            "SERVESTACK_TORCH_THREADS": "1", "HOME": "/home/nobody-here", "PYTHONPATH": str(REPO),
            # what the Deployment points at its emptyDir (HF_HOME) or the server defaults to under it
            "TMPDIR": str(writable), "HF_HOME": f"{writable}/hf", "XDG_CACHE_HOME": f"{writable}/cache",
            "TORCHINDUCTOR_CACHE_DIR": f"{writable}/torchinductor", "TRITON_CACHE_DIR": f"{writable}/triton"}
    log = tmp_path / "server.log"
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PREPARE, "sh",
               sys.executable, "-m", "serving"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server.base_url, timeout=120, process=process)
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
                "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and len(lines) > 2
        assert httpx.get(f"{server.base_url}/metrics").status_code == 200
    finally:
        code = server.stop()
    output = log.read_text()
    assert code == 0, output
    assert "Read-only file system" not in output
    assert "Traceback" not in output
