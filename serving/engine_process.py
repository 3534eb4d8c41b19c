"""`EngineProcess`: the TorchEngine loop in a process of its own, behind the same `Engine` interface.

Why a process: the engine loop and the HTTP event loop are both Python, and in one process they take turns
on one interpreter lock. With a small model, where a decode step is mostly Python, serving HTTP then cost
the engine 30-40% of its throughput on 2 cores. vLLM runs its engine core in its own process for the same
reason. Here the app process keeps the tokenizer (prompts are counted and checked before they are queued)
and the request handles; the engine process keeps the model and the batch.

The wire: two one-way pipes.
  app -> engine:  ("submit", id, prompt_ids, params, submitted_at) | ("cancel", id) | ("stop",)
  engine -> app:  one message per loop step: (decode batch size or 0, [(id, delta, error), ...]), where
                  delta is an Output's fields as a tuple, or error its (code, message), the other None
Status read on every probe and admission (loaded, time of the last step, requests running, KV usage, dead)
sits in shared memory, not in messages.

The engine process ignores SIGTERM and SIGINT: the app process owns the drain and sends "stop" when done.
If the app process dies, the engine process sees its pipe close and exits; if the engine process dies, the
app's reader sees its pipe close, fails the requests in flight and reports the engine dead (and the server
exits, see serving.__main__).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import multiprocessing.util
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from serving import logs
from serving.engine import (
    Engine,
    Output,
    Request,
    RequestHandle,
    SamplingParams,
    TorchEngine,
    _Failed,
    context_length,
    deliver,
    encode_chat,
    encode_prompt,
    freeze_heap,
    load_tokenizer,
    max_token_chars,
    token_texts,
    vocab_size,
)
from serving.errors import EngineDead, ServingError
from serving.logs import LogFormat

log = logging.getLogger("serving.engine")

_Delta = tuple[Any, ...]  # an Output's fields, cheaper to pickle than the object


class _Status(ctypes.Structure):
    """Written by the engine process, read by the app process."""

    _fields_ = [
        ("loaded", ctypes.c_bool),
        ("dead", ctypes.c_bool),
        ("load_seconds", ctypes.c_double),
        ("last_step_at", ctypes.c_double),
        ("running", ctypes.c_int),
        ("kv_cache_usage", ctypes.c_double),
    ]


class EngineProcess(Engine):
    """A `TorchEngine` run in a spawned child process (see the module docstring)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_name: str,
        max_batch_size: int = 16,
        threads: int = 0,
        require_cuda: bool = False,
        on_step: Callable[[int], None] | None = None,
        log_format: LogFormat = "json",
        revision: str = "none",
    ) -> None:
        self.model_path = Path(model_path)
        self.model_name = model_name
        self.max_batch_size = max_batch_size
        self.threads = threads
        self.require_cuda = require_cuda
        self.log_format = log_format
        self.revision = revision
        self.max_model_len = 0
        self.vocab_size = 0
        self.max_token_chars = 1
        self._on_step = on_step
        self._mp = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or threads
        self._status: Any = self._mp.RawValue(_Status)
        self._status.last_step_at = time.monotonic()
        self._handles: dict[int, RequestHandle] = {}
        self._send_lock = threading.Lock()
        self._process: Any = None
        self._to_engine: Connection | None = None
        self._tokenizer: Any = None
        self._lost = False  # the engine process went away while it should have been running
        self._stopping = False

    # -- Engine interface --

    @property
    def loaded(self) -> bool:
        return self._tokenizer is not None and bool(self._status.loaded)

    @property
    def dead(self) -> bool:
        return self._lost or bool(self._status.dead)

    @property
    def last_step_at(self) -> float:
        return float(self._status.last_step_at)

    @property
    def num_running(self) -> int:
        return int(self._status.running)

    @property
    def num_waiting(self) -> int:
        return max(0, len(self._handles) - self.num_running)

    @property
    def load_seconds(self) -> float | None:
        return float(self._status.load_seconds) if self._status.loaded else None

    @property
    def kv_cache_usage(self) -> float:
        return float(self._status.kv_cache_usage)

    def start(self) -> None:
        from_app, to_engine = self._mp.Pipe(duplex=False)
        from_engine, to_app = self._mp.Pipe(duplex=False)
        self._process = self._mp.Process(
            target=_engine_main,
            name="servestack-engine",
            args=(from_app, to_app, self._status, str(self.model_path), self.model_name, self.max_batch_size,
                  self.threads, self.require_cuda, logging.getLogger().level, self.log_format, self.revision),
            daemon=True,
        )
        self._process.start()
        from_app.close()  # the child holds its ends; closing ours lets each side see the other's exit as EOF
        to_app.close()
        self._to_engine = to_engine
        # At interpreter exit multiprocessing joins its children (after a SIGTERM the engine ignores); closing
        # the pipe first is what tells the engine process to end, even when nobody called stop().
        multiprocessing.util.Finalize(self, to_engine.close, exitpriority=10)
        threading.Thread(target=self._read, args=(from_engine,), name="engine-reader", daemon=True).start()
        threading.Thread(target=self._load_tokenizer, name="tokenizer-load", daemon=True).start()

    async def stop(self) -> None:
        self._stopping = True
        self._post(("stop",))
        if self._process is not None:
            await asyncio.to_thread(self._process.join, 60)
            if self._process.is_alive():
                log.warning("the engine process did not stop within 60s; killing it")
                self._process.kill()
                await asyncio.to_thread(self._process.join, 10)
        if self._to_engine is not None:
            self._to_engine.close()

    def encode_prompt(self, text: str) -> list[int]:
        return encode_prompt(self._tokenizer, text)

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        return encode_chat(self._tokenizer, messages)

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        return token_texts(self._tokenizer, ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids)))

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams) -> RequestHandle:
        if self.dead or self._stopping:
            raise EngineDead("the engine has stopped")
        handle = RequestHandle(prompt_ids, params, on_cancel=self._cancel)
        self._handles[handle.id] = handle
        if not self._post(("submit", handle.id, handle.prompt_ids, params, handle.submitted_at)):
            self._handles.pop(handle.id, None)
            raise EngineDead("the engine process is gone")
        return handle

    # -- the app side of the wire --

    def _cancel(self, handle: RequestHandle) -> None:
        if handle.id in self._handles:
            self._post(("cancel", handle.id))

    def _post(self, message: tuple[Any, ...]) -> bool:
        """Send to the engine process; False when it is gone."""
        if self._to_engine is None:
            return False
        try:
            with self._send_lock:
                self._to_engine.send(message)
            return True
        except OSError:  # broken pipe: the engine process has exited
            return False

    def _load_tokenizer(self) -> None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.model_path)
            self.max_model_len = context_length(config)
            self.vocab_size = vocab_size(config)
            tokenizer = load_tokenizer(self.model_path)
            self.max_token_chars = max_token_chars(tokenizer)
            freeze_heap()  # this process has imported transformers and torch: see freeze_heap
            self._tokenizer = tokenizer
        except Exception:
            log.exception("loading the tokenizer of %s failed", self.model_path)
            self._lost = True

    def _read(self, from_engine: Connection) -> None:
        """Deliver each step's deltas to the handles' event loops, until the engine process is gone."""
        handles = self._handles
        while True:
            try:
                batch_size, items = from_engine.recv()
            except (EOFError, OSError):
                break
            if batch_size and self._on_step is not None:
                self._on_step(batch_size)
            deliveries: list[tuple[RequestHandle, Output | _Failed]] = []
            for request_id, delta, error in items:
                if error is not None:
                    code, message = error
                    handle = handles.pop(request_id, None)
                    result: Output | _Failed = _Failed(
                        EngineDead(message) if code == EngineDead.code else ServingError(message, code=code))
                else:
                    output = Output(*delta)
                    finished = output.finish_reason is not None
                    handle = handles.pop(request_id, None) if finished else handles.get(request_id)
                    result = output
                if handle is not None:
                    deliveries.append((handle, result))
            deliver(deliveries)
        if not self._stopping:
            self._process.join(5)  # to read its exit code
            log.error("the engine process exited (code %s)", self._process.exitcode)
            self._lost = True
        failure = _Failed(EngineDead("the engine stopped before finishing this request"))
        deliver([(handle, failure) for handle in list(handles.values())])
        handles.clear()


# --- the engine process ------------------------------------------------------------------------------


class _PipedEngine(TorchEngine):
    """The TorchEngine loop, sending its deltas down a pipe and its status to shared memory."""

    def __init__(self, to_app: Connection, status: Any, model_path: str, **kwargs: Any) -> None:
        super().__init__(model_path, on_step=self._note_step, **kwargs)
        self._to_app = to_app
        self._status = status
        self.requests: dict[int, Request] = {}
        self._batch_size = 0  # of the decode step whose deltas go out next
        self._kv_reported_at = 0.0

    def _note_step(self, batch_size: int) -> None:
        self._batch_size = batch_size

    def load(self) -> None:
        super().load()
        self._status.load_seconds = self.load_seconds or 0.0
        self._status.loaded = True

    def _tick(self) -> None:
        super()._tick()
        self._status.last_step_at = now = self.last_step_at
        self._status.running = len(self._running)
        if now - self._kv_reported_at > 0.25:  # a sum over the batch: often enough for a gauge, not every step
            self._kv_reported_at = now
            self._status.kv_cache_usage = self.kv_cache_usage

    def _send(self, items: list[tuple[Request, Output | _Failed]]) -> None:
        wire: list[tuple[int, _Delta | None, tuple[str | None, str] | None]] = []
        for request, item in items:
            if isinstance(item, _Failed):
                self.requests.pop(request.id, None)
                wire.append((request.id, None, (item.error.code, item.error.message)))
            else:
                if item.finish_reason is not None:
                    self.requests.pop(request.id, None)
                wire.append((request.id, (item.text, item.new_tokens, item.finish_reason, item.queue_seconds,
                                          item.logprobs, item.prompt_logprobs), None))
        batch_size, self._batch_size = self._batch_size, 0
        try:
            self._to_app.send((batch_size, wire))
        except OSError:  # the app process is gone; its half of the work has no one to go to
            self._stopping.set()

    def _main(self) -> None:
        try:
            super()._main()
        finally:
            self._status.running = 0
            self._status.dead = self.dead
            self._to_app.close()  # the app sees EOF: whatever it still sends has no one to go to


def _engine_main(from_app: Connection, to_app: Connection, status: Any, model_path: str, model_name: str,
                 max_batch_size: int, threads: int, require_cuda: bool, log_level: int, log_format: LogFormat,
                 revision: str) -> None:
    """The engine process: the loop in a thread, this thread reading requests and cancels from the app."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.configure(log_format, log_level, model_name, revision)  # the same lines as the app's
    engine = _PipedEngine(to_app, status, model_path, model_name=model_name, max_batch_size=max_batch_size,
                          threads=threads, require_cuda=require_cuda)
    engine.start()
    requests = engine.requests
    while engine.looping:  # when the loop has ended (stopped or failed), so does this process
        try:
            if not from_app.poll(0.5):
                continue
            message = from_app.recv()
        except (EOFError, OSError):  # the app process is gone
            break
        kind = message[0]
        if kind == "submit":
            _, request_id, prompt_ids, params, submitted_at = message
            request = Request(prompt_ids, params, id=request_id, submitted_at=submitted_at)
            requests[request_id] = request
            engine.enqueue(request)
        elif kind == "cancel":
            cancelled = requests.get(message[1])
            if cancelled is not None:
                cancelled.cancelled.set()
                engine.wake()
        elif kind == "stop":
            break
    engine.stop_and_join()
