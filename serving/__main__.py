"""Start the server: `python -m serving` (settings from the environment, see serving.settings).

SIGTERM (or Ctrl-C) drains: readiness turns 503 and new requests get 503 at once, the requests in flight
get up to SERVESTACK_DRAIN_SECONDS to finish, then the server stops and the process exits 0. A second
signal stops at once.

If the engine dies (its loop failed, its process is gone, or the model could not load, CUDA included when
SERVESTACK_REQUIRE_CUDA is set), the server says so in one log line, stops and exits 1, so that Kubernetes
restarts the container at once instead of after its probes give up.

Before anything loads, the model directory must be the configured model at the configured revision (its
manifest.json, serving.manifest) and the API keys file readable: otherwise the start stops with exit code 2
and one message. With SERVESTACK_METRICS_PORT, /metrics is served on that port only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("serving")


def _offline_environment() -> None:
    """No network at run time, and caches only under /tmp (the root filesystem may be read-only)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HOME", "/tmp/hf-home")
    os.environ.setdefault("XDG_CACHE_HOME", "/tmp/cache")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor")
    os.environ.setdefault("TRITON_CACHE_DIR", "/tmp/triton")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no progress bars among the log lines


class DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM meaning: drain first (see the module docstring), then stop."""

    def __init__(self, config: uvicorn.Config, lifecycle: Any, engine: Any, drain_seconds: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.engine = engine
        self.drain_seconds = drain_seconds
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Future[None] | None = None

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's main loop asks this every 0.1 s whether to stop."""
        if self.engine.dead and not self.exit_code:
            log.critical("the engine has failed (see above): exiting with code 1 so that the server is restarted")
            self.exit_code = 1
            self.should_exit = True
        return await super().on_tick(counter)

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGTERM, signal.SIGINT)
        original = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or self._loop is None:
            self.should_exit = True
            return
        log.info("signal %s: draining for up to %.0fs", signal.Signals(sig).name, self.drain_seconds)
        self.lifecycle.begin_drain()
        self._draining = asyncio.run_coroutine_threadsafe(self._drain(), self._loop)  # type: ignore[assignment]

    async def _drain(self) -> None:
        finished = await self.lifecycle.wait_idle(self.drain_seconds)
        if not finished:
            log.warning("drain time is up with %d requests in flight; stopping", self.lifecycle.in_flight)
        self.should_exit = True


def main() -> int:
    _offline_environment()
    import prometheus_client
    from pydantic import ValidationError

    from serving import logs
    from serving.app import build_app
    from serving.engine_process import EngineProcess
    from serving.keys import KeysFileError
    from serving.manifest import ManifestError, check_served_model
    from serving.settings import Settings, describe

    try:
        settings = Settings()  # type: ignore[call-arg]  # filled from the environment
    except ValidationError as error:
        print(f"servestack: bad settings:\n{describe(error)}", file=sys.stderr)
        return 2
    try:
        served = check_served_model(settings.model_path, settings.model_name or None, settings.model_revision)
    except ManifestError as error:
        print(f"servestack: refusing to serve: {error}", file=sys.stderr)
        return 2

    revision = settings.model_revision or (served.revision if served else "none")
    logs.configure(settings.log_format, settings.log_level, settings.served_model_name, revision)
    holder: dict[str, Any] = {}
    engine = EngineProcess(
        settings.model_path,
        model_name=settings.served_model_name,
        max_batch_size=settings.max_batch_size,
        threads=settings.torch_threads,
        require_cuda=settings.require_cuda,
        log_format=settings.log_format,
        revision=revision,
        on_step=lambda size: holder["metrics"].batch_size.observe(size),
    )
    try:
        app = build_app(settings, engine)
    except KeysFileError as error:
        print(f"servestack: SERVESTACK_API_KEYS_FILE: {error}", file=sys.stderr)
        return 2
    holder["metrics"] = app.state.ctx.metrics
    if settings.metrics_port is not None:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.host,
                                            registry=app.state.ctx.metrics.registry)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        log_config=None,  # uvicorn's lines go through the root logger's handler (serving.logs), as ours do
        access_log=False,  # the edge logs each /v1 request with its fields (serving.app)
    )
    server = DrainingServer(config, app.state.lifecycle, engine, settings.drain_seconds)
    server.run()
    return server.exit_code


if __name__ == "__main__":
    sys.exit(main())
