"""The engine: tokens in, tokens out, many requests at once.

The boundary. The HTTP layer (serving.app) speaks to an engine only through `Engine`:
`encode_prompt` / `encode_chat` turn text into token ids (`token_texts` and `decode` go back), `submit`
queues a request and returns a `RequestHandle` whose async iterator yields `Output` deltas until one
carries a finish reason, and `cancel()` on a handle frees its batch slot at the next step. The engine
knows nothing of HTTP, JSON, auth or limits other than its batch size; the app knows nothing of torch,
caches or batches. Tests put a fake engine behind this same interface.

Failures. Whatever goes wrong with one request inside the loop (its seed, its sampling, its logit
adjustments, its text) fails that request alone, with a 500 for it, and the loop goes on; a prefill that
fails is retried one prompt at a time, so that only the prompt at fault fails. Only a failed decode step
of the whole batch, or a failed load, ends the loop: the engine is then dead, and the server exits.

`TorchEngine` is the continuous-batching implementation: one thread owns the model and loops
admit -> prefill newcomers -> one decode step for every running sequence -> emit deltas. `python -m serving`
runs it in a process of its own (serving.engine_process), so that HTTP and this loop do not take turns on
one interpreter lock. Requests join the
running batch between decode steps and leave it when they finish or are cancelled; their keys and values
stay in a preallocated per-layer buffer (rows = sequences, left-padded; columns = positions), so no step
recomputes a prefix and a short request never waits for a long one to finish.

Why our own scheduler: transformers' continuous batching (`generate_batch`, paged attention) runs on CPU
but measured 80-90 output tokens/s with SmolLM2-135M on 2 cores for 32 requests, against about 170 for this
engine at batch 16 (`python -m serving.sidebyside --with-transformers-cb`); it is offline (no streaming of
a request while others join) as used there. This engine keeps transformers for what works: the models,
their tokenizers and chat templates, SDPA attention, and the Cache interface (a preallocated layer). On CPU
the linear layers run on oneDNN with weights packed once at load (`prepack_linears`): twice as fast per
decode step as torch's default matrix products on this machine, at batch 1 and at batch 16.

Exactness: every row gets its own position ids and a mask that hides its left padding, so greedy output
is the same token for token whether a request runs alone or in a batch (fp32 on CPU).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gc
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import EngineDead, ServingError

log = logging.getLogger("serving.engine")

SMALL_MODEL_PARAMETERS = 50_000_000  # below this, CPU inference uses one thread unless told otherwise


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request. temperature 0 is greedy; top_k 0 and top_p 1.0 are off.

    Penalties and biases adjust the logits before the pick, as OpenAI defines them: the frequency penalty
    times how often a token has been generated so far, and the presence penalty once it has been, are
    subtracted; `logit_bias` adds its (token id, bias) pairs. `logprobs` asks, for each generated token, for
    its log-probability and those of the `logprobs` most likely tokens; `prompt_logprobs` the same for each
    prompt token. Log-probabilities are the model's own, before temperature, penalties and biases (as vLLM
    reports them by default)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None
    prompt_logprobs: int | None = None


# (token id, its log-probability, ((id, log-probability) of the most likely tokens, best first))
TokenLogprobs = tuple[int, float, tuple[tuple[int, float], ...]]


@dataclass(frozen=True)
class Output:
    """One delta of a request: new text and token count, and on the last one the finish reason."""

    text: str
    new_tokens: int
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"
    queue_seconds: float | None = None  # on the first delta: time from submit to leaving the queue for the batch
    logprobs: tuple[TokenLogprobs, ...] | None = None  # one per new token, when asked for
    prompt_logprobs: tuple[TokenLogprobs | None, ...] | None = None  # on the first delta, when asked for;
    # the first prompt token has none


@dataclass(frozen=True)
class _Failed:
    error: ServingError


class Request:
    """A request as an engine loop sees it: its prompt, its sampling, when it came, whether it is cancelled."""

    _ids = itertools.count(1)

    def __init__(self, prompt_ids: Sequence[int], params: SamplingParams, *, id: int | None = None,
                 submitted_at: float | None = None) -> None:
        self.id = next(self._ids) if id is None else id
        self.prompt_ids = list(prompt_ids)
        self.params = params
        # time.monotonic() is the system's monotonic clock: comparable across the processes of one machine.
        self.submitted_at = time.monotonic() if submitted_at is None else submitted_at
        self.cancelled = threading.Event()


class RequestHandle(Request):
    """A submitted request as the app sees it: iterate its deltas, or cancel it."""

    def __init__(self, prompt_ids: Sequence[int], params: SamplingParams,
                 on_cancel: Callable[[RequestHandle], None] | None = None) -> None:
        super().__init__(prompt_ids, params)
        self._on_cancel = on_cancel
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Output | _Failed] = asyncio.Queue()
        self._done = False

    def cancel(self) -> None:
        """Stop generating; the engine frees the slot before its next step."""
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        if self._on_cancel is not None:
            self._on_cancel(self)

    # Called by the engine, from any thread.
    def push(self, item: Output | _Failed) -> None:
        deliver([(self, item)])

    async def __aiter__(self) -> AsyncIterator[Output]:
        """The deltas; those that piled up while the consumer was busy come merged into one."""
        while not self._done:
            items = [await self._events.get()]
            while not self._events.empty() and not isinstance(items[-1], _Failed):
                items.append(self._events.get_nowait())
            failed = [i for i in items if isinstance(i, _Failed)]
            outputs = [i for i in items if isinstance(i, Output)]
            if outputs:
                merged = merge(outputs)
                self._done = merged.finish_reason is not None
                yield merged
            if failed and not self._done:
                self._done = True
                raise failed[0].error


def merge(outputs: list[Output]) -> Output:
    """Several consecutive deltas of one request as one."""
    if len(outputs) == 1:
        return outputs[0]
    with_logprobs = [o.logprobs for o in outputs if o.logprobs is not None]
    return Output(
        text="".join(o.text for o in outputs),
        new_tokens=sum(o.new_tokens for o in outputs),
        finish_reason=outputs[-1].finish_reason,
        queue_seconds=outputs[0].queue_seconds,
        logprobs=tuple(lp for step in with_logprobs for lp in step) if with_logprobs else None,
        prompt_logprobs=outputs[0].prompt_logprobs,
    )


def deliver(items: list[tuple[RequestHandle, Output | _Failed]]) -> None:
    """Hand deltas to their event loops: one wake-up per loop per call, however many deltas."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, Output | _Failed]]] = {}
    for handle, item in items:
        by_loop.setdefault(handle._loop, []).append((handle, item))
    for loop, batch in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is listening any more
            loop.call_soon_threadsafe(_put_all, batch)


def _put_all(batch: list[tuple[RequestHandle, Output | _Failed]]) -> None:
    for handle, item in batch:
        handle._events.put_nowait(item)


class Engine(abc.ABC):
    """What the app needs from an engine. Implementations: `TorchEngine`, and fakes in the tests."""

    model_name: str
    max_model_len: int  # the longest sequence, prompt and output, in tokens
    vocab_size: int  # token ids are below this
    max_token_chars: int  # characters of the longest token: a text of n characters has >= n / this tokens

    @abc.abstractmethod
    def start(self) -> None:
        """Begin loading the model and stepping, in the background; return at once."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop stepping and fail whatever is still queued."""

    @property
    @abc.abstractmethod
    def loaded(self) -> bool: ...

    @property
    @abc.abstractmethod
    def dead(self) -> bool:
        """True once the loop has failed for good; the process should be restarted."""

    @property
    @abc.abstractmethod
    def last_step_at(self) -> float:
        """time.monotonic() of the loop's last iteration (it also ticks while idle)."""

    @property
    @abc.abstractmethod
    def num_running(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_waiting(self) -> int: ...

    @property
    @abc.abstractmethod
    def load_seconds(self) -> float | None: ...

    @property
    @abc.abstractmethod
    def kv_cache_usage(self) -> float:
        """The share of the engine's key-value capacity (every batch slot at full context) that running
        sequences hold, 0 to 1."""

    @abc.abstractmethod
    def encode_prompt(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """The ids of a conversation through the model's chat template (ValueError if the template refuses
        it)."""

    @abc.abstractmethod
    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """The text of each token alone (for log-probabilities)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def submit(self, prompt_ids: Sequence[int], params: SamplingParams) -> RequestHandle:
        """Queue a request (call from the event loop). Deltas arrive through the returned handle."""


class StartupError(Exception):
    """The engine cannot start as configured (said in one line, without a traceback)."""


def choose_device(require_cuda: bool = False) -> tuple[str, Any]:
    """CUDA with bf16 when a GPU is usable, CPU with fp32 otherwise; with `require_cuda`, no CUDA is a
    StartupError that says why (torch's own reason: no device, or a driver older than its CUDA build)."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        torch.zeros(1, device="cuda")  # initialise the device now: a broken driver or GPU fails here, at start
        log.info("CUDA device %s, torch %s built for CUDA %s", torch.cuda.get_device_name(), torch.__version__,
                 torch.version.cuda)
        return "cuda", torch.bfloat16
    if require_cuda:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA (a CPU build)"
        reasons = "; ".join(str(w.message).strip() for w in caught) or "torch.cuda.is_available() is False"
        raise StartupError(f"SERVESTACK_REQUIRE_CUDA is set but CUDA is not usable: {reasons} (torch "
                           f"{torch.__version__}, built for {build})")
    return "cpu", torch.float32


def freeze_heap() -> None:
    """Move every object alive now (the modules torch and transformers import, the model, the tokenizer) out
    of the garbage collector's sight. A process that has imported them holds a few hundred thousand objects,
    and each full collection walks them all: measured on a busy 2-core machine, 0.3-0.6 s with every stream
    of the process stopped, the first of them among the first few hundred requests. After loading, those
    objects live as long as the process; frozen, a full collection walks only what requests create (vLLM
    and SGLang freeze their heap after start-up too)."""
    gc.collect()
    gc.freeze()


def _prepacked_linear_class() -> type:
    import torch

    class PrepackedLinear(torch.nn.Module):
        """A linear layer run by oneDNN on a weight it reordered once, at load time, into its own blocked
        layout (as torch's inductor does when it freezes a CPU model). Measured with SmolLM2-135M on this
        project's 2-core AMD machine, fp32: a decode step at batch 16 takes 33 ms instead of 74 ms with
        torch's default (MKL) matrix products, and 19 instead of 36 ms at batch 1; same greedy tokens."""

        def __init__(self, linear: Any, batch_size: int) -> None:
            super().__init__()
            self.out_features = linear.out_features
            self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_size)
            self.bias = None if linear.bias is None else linear.bias.detach()

        def forward(self, x: Any) -> Any:
            y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self.weight, self.bias,
                                                   "none", [], "")
            return y.view(*x.shape[:-1], self.out_features)

    return PrepackedLinear


def prepack_linears(model: Any, batch_size: int) -> int:
    """Replace every plain fp32 linear layer of a CPU model by a `PrepackedLinear` (weights packed for
    `batch_size` rows, which oneDNN takes as a hint). Returns how many were replaced."""
    import torch

    prepacked = _prepacked_linear_class()
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32:
                setattr(module, name, prepacked(child, batch_size))
                replaced += 1
    return replaced


# --- the continuous-batching implementation -------------------------------------------------------


class _TextTracker:
    """Turns a growing list of token ids into text deltas, holding back what may still become a stop string
    or an incomplete UTF-8 character. With a fast (Rust) tokenizer, the tokenizers library's `DecodeStream`
    decodes each new token in one call, as TGI does. Otherwise, and for the rest of a request whose ids the
    stream refuses (a byte-fallback tokenizer given invalid bytes), a short window is decoded per token, as
    vLLM does: the text of ids[prefix:] minus that of ids[prefix:read] is what the newest ids added."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._stream: Any = None
        if self._backend is not None:
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(skip_special_tokens=True)
        self._fed = 0  # token ids given to the stream
        self._prefix = 0  # token offsets of the decode window; with the stream, both mark its last piece
        self._read = 0
        self.text = ""  # all text decoded so far
        self.emitted = 0  # characters of it already sent

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def _advance(self, token_ids: list[int], final: bool) -> None:
        """Append to `text` what the ids not seen yet decode to."""
        if self._stream is not None:
            try:
                for i in range(self._fed, len(token_ids)):
                    piece = self._stream.step(self._backend, token_ids[i])
                    self._fed = i + 1
                    if piece:
                        self.text += piece
                        self._prefix = self._read = self._fed
            except Exception:  # the stream refuses these bytes: decode by windows from its last piece on
                log.debug("DecodeStream refused a token sequence; decoding this request by windows")
                self._stream = None
            else:
                if not final or self._read == len(token_ids):
                    return
                # The request ends inside a character the stream still holds: the window path below sends
                # what those ids decode to (with U+FFFD for the missing bytes), as decode() would.
        before = self._decode(token_ids[self._prefix : self._read])
        after = self._decode(token_ids[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(token_ids)

    def update(self, token_ids: list[int], final: bool) -> tuple[str, bool]:
        """Return (new text to send, whether a stop string was found)."""
        self._advance(token_ids, final)
        if self._stop:
            start = max(0, self.emitted - self._hold)
            hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                cut = min(hits)
                delta = self.text[self.emitted : cut]
                self.emitted = max(self.emitted, cut)
                return delta, True
        end = len(self.text) if final else len(self.text) - self._hold
        if end <= self.emitted:
            return "", False
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta, False


@dataclass
class _Seq:
    handle: Request
    text: _TextTracker
    generator: Any  # torch.Generator, or None for greedy
    counts: Any = None  # per vocabulary entry, how often it was generated (with penalties only)
    bias: Any = None  # (token ids, biases) tensors (with logit_bias only)
    admitted_at: float = 0.0  # time.monotonic() when it left the queue for the batch
    # Greedy, nothing to adjust, nothing to report: the batch's argmax is this row's token.
    plain: bool = False
    generated: list[int] = field(default_factory=list)
    pad: int = 0  # left padding columns of this row in the batch buffer
    first_output_sent: bool = False
    prompt_logprobs: tuple[TokenLogprobs | None, ...] | None = None  # to send with the first delta

    @property
    def params(self) -> SamplingParams:
        return self.handle.params


class _Window:
    """The live part of the batch buffer, shared by all layers: `rows` sequences, `length` columns."""

    rows = 0
    length = 0


def _buffer_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """One layer's keys and values for the running batch, written in place into a preallocated buffer."""

        def __init__(self, window: _Window, keys: Any, values: Any) -> None:
            super().__init__()
            self.window = window
            self.kbuf = keys
            self.vbuf = values
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            n, start = self.window.rows, self.window.length
            end = start + key_states.shape[-2]
            self.kbuf[:n, :, start:end] = key_states
            self.vbuf[:n, :, start:end] = value_states
            self.keys = self.kbuf[:n, :, :end]
            self.values = self.vbuf[:n, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.window.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.window.length + query_length, 0

    return BufferLayer


class TorchEngine(Engine):
    """Continuous batching over a Hugging Face causal LM directory (see the module docstring)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        model_name: str,
        max_batch_size: int = 16,
        prefill_token_budget: int = 2048,
        threads: int = 0,
        require_cuda: bool = False,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.model_name = model_name
        self.max_batch_size = max_batch_size
        self.prefill_token_budget = prefill_token_budget
        self.threads = threads
        self.require_cuda = require_cuda
        self.max_model_len = 0
        self.vocab_size = 0
        self.max_token_chars = 1
        self._on_step = on_step
        self._inbox: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaded = False
        self._dead = False
        self._last_step_at = time.monotonic()
        self._load_seconds: float | None = None
        self._submitted = 0  # counted on the event loop thread
        self._finished = 0  # counted on the engine thread
        self._running: list[_Seq] = []
        self._window = _Window()
        self._kbufs: list[Any] = []
        self._vbufs: list[Any] = []
        # The running rows' padding and their decode mask over the whole buffer; made again only when the
        # rows or the buffer change, so that a step takes a longer view of the mask instead of building one.
        self._decode_inputs: tuple[Any, Any] | None = None
        self.tokenizer: Any = None
        self.model: Any = None

    # -- Engine interface --

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def dead(self) -> bool:
        return self._dead

    @property
    def last_step_at(self) -> float:
        return self._last_step_at

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return max(0, self._submitted - self._finished - len(self._running))

    @property
    def load_seconds(self) -> float | None:
        return self._load_seconds

    @property
    def kv_cache_usage(self) -> float:
        held = sum(len(s.handle.prompt_ids) + len(s.generated) for s in list(self._running))
        return held / (self.max_batch_size * self.max_model_len) if self.max_model_len else 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_and_join)

    @property
    def looping(self) -> bool:
        """True from start() until the loop has ended (stopped or failed)."""
        return self._thread is not None and self._thread.is_alive()

    def stop_and_join(self, timeout: float = 60) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def encode_prompt(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        return encode_chat(self.tokenizer, messages)

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        return token_texts(self.tokenizer, ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams) -> RequestHandle:
        if self._dead or self._stopping.is_set():
            raise EngineDead("the engine has stopped")
        handle = RequestHandle(prompt_ids, params)
        self.enqueue(handle)
        return handle

    # -- for engines that wrap this one --

    def enqueue(self, request: Request) -> None:
        """Queue a request built elsewhere (any thread); its deltas go to `_send`."""
        self._submitted += 1
        self._inbox.put(request)
        self._wake.set()

    def wake(self) -> None:
        """Have the loop look at its requests now (e.g. after a cancel)."""
        self._wake.set()

    def _send(self, items: list[tuple[Request, Output | _Failed]]) -> None:
        """Hand deltas to whoever waits for them: here, the event loops of the requests' handles."""
        deliver(items)  # type: ignore[arg-type]  # this engine's requests are the handles of submit()

    def _tick(self) -> None:
        self._last_step_at = time.monotonic()

    # -- loading --

    def load(self) -> None:
        """Load model and tokenizer (also usable without the loop, e.g. by the benchmark)."""
        import torch
        from transformers import AutoModelForCausalLM

        started = time.monotonic()
        device, dtype = choose_device(self.require_cuda)
        self.device = torch.device(device)
        self.dtype = dtype
        self.tokenizer = load_tokenizer(self.model_path)
        # device_map: each weight goes straight to the device as it is read, never the whole model in host memory.
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype, attn_implementation="sdpa",
                                                     device_map=device)
        self.model = model.eval()
        if self.threads:
            torch.set_num_threads(self.threads)
        elif device == "cpu" and model.num_parameters() < SMALL_MODEL_PARAMETERS:
            # A small model's operations are too short to gain from several threads, and with several a
            # busy core elsewhere on the machine stalls every step (measured: 400 instead of 10,000 tok/s).
            torch.set_num_threads(1)
        if device == "cpu" and torch.backends.mkldnn.is_available():
            with torch.inference_mode():
                prepacked = prepack_linears(model, self.max_batch_size)
            log.info("%d linear layers prepacked for oneDNN", prepacked)
        self.max_model_len = context_length(model.config)
        self.vocab_size = vocab_size(model.config)
        self.max_token_chars = max_token_chars(self.tokenizer)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        self._buffer_layer = _buffer_layer_class()
        freeze_heap()
        self._load_seconds = time.monotonic() - started
        self._loaded = True
        log.info("loaded %s on %s (%s) in %.1fs", self.model_path, device, dtype, self._load_seconds)

    # -- the loop --

    def _main(self) -> None:
        import torch

        waiting: list[Request] = []
        try:
            self.load()
        except StartupError as error:
            log.critical("%s", error)
            self._dead = True
        except Exception:
            log.exception("loading the model from %s failed", self.model_path)
            self._dead = True
        try:
            if self._dead:
                return
            with torch.inference_mode():
                while not self._stopping.is_set():
                    self._tick()
                    self._wake.clear()  # before reading the inbox, so that no submit's wake-up is lost
                    while True:
                        try:
                            waiting.append(self._inbox.get_nowait())
                        except queue.Empty:
                            break
                    waiting = self._drop_cancelled(waiting)
                    admitted = self._admit(waiting)
                    if admitted:
                        waiting = waiting[len(admitted) :]
                        self._prefill(admitted)
                    if self._running:
                        self._decode_step()
                    elif not waiting:
                        self._wake.wait(0.1)
        except Exception:
            log.exception("engine loop failed")
            self._dead = True
        finally:
            failure = _Failed(EngineDead("the engine stopped before finishing this request"))
            unfinished = waiting + [s.handle for s in self._running]
            while True:
                try:
                    unfinished.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            self._send([(request, failure) for request in unfinished])

    def _drop_cancelled(self, waiting: list[Request]) -> list[Request]:
        kept = []
        gone: list[tuple[Request, Output | _Failed]] = []
        for request in waiting:
            if request.cancelled.is_set():
                self._finished += 1
                gone.append((request, Output("", 0, "cancelled")))
            else:
                kept.append(request)
        cancelled = [i for i, s in enumerate(self._running) if s.handle.cancelled.is_set()]
        gone += [(self._running[i].handle, Output("", 0, "cancelled")) for i in cancelled]
        if gone:
            self._send(gone)
        self._remove_rows(cancelled)
        return kept

    def _admit(self, waiting: list[Request]) -> list[Request]:
        """First come, first served, up to the free slots and the prefill token budget (at least one). A
        request that wants its prompt's log-probabilities is prefilled alone (they take logits at every
        position)."""
        free = self.max_batch_size - len(self._running)
        admitted: list[Request] = []
        longest = 0
        for handle in waiting[:free]:
            alone = handle.params.prompt_logprobs is not None
            longest = max(longest, len(handle.prompt_ids))
            if admitted and (alone or longest * (len(admitted) + 1) > self.prefill_token_budget):
                break
            admitted.append(handle)
            if alone:
                break
        return admitted

    def _new_seq(self, handle: Request) -> _Seq:
        import torch

        params = handle.params
        generator = counts = bias = None
        if params.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.seed % 2**64 if params.seed is not None else random.getrandbits(63))
        if params.presence_penalty or params.frequency_penalty:
            counts = torch.zeros(self.vocab_size, dtype=torch.float32, device=self.device)
        if params.logit_bias:
            ids, values = zip(*params.logit_bias, strict=True)
            bias = (torch.tensor(ids, device=self.device), torch.tensor(values, dtype=torch.float32,
                                                                       device=self.device))
        plain = generator is None and counts is None and bias is None and params.logprobs is None
        return _Seq(handle=handle, text=_TextTracker(self.tokenizer, params.stop), generator=generator,
                    counts=counts, bias=bias, admitted_at=time.monotonic(), plain=plain)

    def _prefill(self, handles: list[Request]) -> None:
        """Prefill the newcomers together; if that fails, each alone, so that only a prompt at fault fails."""
        seqs: list[_Seq] = []
        failed: list[tuple[Request, Output | _Failed]] = []
        for handle in handles:
            try:
                seqs.append(self._new_seq(handle))
            except Exception as error:
                failed.append((handle, self._failure(handle, error)))
        if failed:
            self._finished += len(failed)
            self._send(failed)
        if not seqs:
            return
        try:
            logits, pads, cache, width = self._run_prompts(seqs)
        except Exception as error:
            if len(seqs) == 1:
                self._finished += 1
                self._send([(seqs[0].handle, self._failure(seqs[0].handle, error))])
            else:
                for seq in seqs:
                    self._prefill([seq.handle])
            return
        self._merge(seqs, pads, cache, width)
        self._emit(seqs, logits)

    def _failure(self, handle: Request, error: Exception) -> _Failed:
        log.error("request %s failed in the engine: %r", handle.id, error, exc_info=error)
        return _Failed(ServingError(f"the engine failed on this request ({type(error).__name__})"))

    def _run_prompts(self, seqs: list[_Seq]) -> tuple[Any, list[int], Any, int]:
        """Run the prompts of the newcomers, left-padded together: the logits of their last positions, their
        padding, their keys and values, and the width of the batch."""
        import torch
        from transformers import DynamicCache

        handles = [s.handle for s in seqs]
        scoring = handles[0].params.prompt_logprobs  # then it is alone (see _admit)
        lengths = [len(h.prompt_ids) for h in handles]
        width = max(lengths)
        pads = [width - n for n in lengths]
        pad_id = 0
        ids = torch.tensor([[pad_id] * p + h.prompt_ids for p, h in zip(pads, handles, strict=True)])
        pad_t = torch.tensor(pads)
        positions = (torch.arange(width)[None, :] - pad_t[:, None]).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids.to(self.device),
            position_ids=positions.to(self.device),
            attention_mask=self._mask(pad_t, query=width, keys=width),
            cache=cache,
            use_cache=True,
            logits_to_keep=1 if scoring is None else 0,
        )
        if scoring is not None:
            seqs[0].prompt_logprobs = _prompt_logprobs(out.logits[0], handles[0].prompt_ids, scoring)
        return out.logits[:, -1, :], pads, cache, width

    def _decode_step(self) -> None:
        import torch

        seqs = self._running
        length = self._window.length
        if length + 1 > self._kbufs[0].shape[2]:
            self._grow(length + 1)
        if self._decode_inputs is None:
            pads = torch.tensor([s.pad for s in seqs], device=self.device)
            self._decode_inputs = pads, self._mask(pads, query=1, keys=self._kbufs[0].shape[2])
        pads, masks = self._decode_inputs
        ids = torch.tensor([[s.generated[-1]] for s in seqs], device=self.device)
        out = self.model(
            input_ids=ids,
            position_ids=(length - pads)[:, None],
            attention_mask=masks[..., : length + 1],
            cache=self._cache,
            use_cache=True,
        )
        self._window.length = length + 1
        if self._on_step is not None:
            self._on_step(len(seqs))
        self._emit(list(seqs), out.logits[:, -1, :])

    def _mask(self, pads: Any, *, query: int, keys: int) -> Any:
        """Additive 4D mask [rows, 1, query, keys], made on the engine's device: row i sees neither its padding
        nor the future."""
        import torch

        device = self.device
        cols = torch.arange(keys, device=device)[None, None, :]
        rows = torch.arange(keys - query, keys, device=device)[None, :, None]
        hidden = (cols < pads.to(device)[:, None, None]) | (cols > rows)
        mask = torch.zeros(hidden.shape, dtype=self.dtype, device=device)
        mask.masked_fill_(hidden, torch.finfo(self.dtype).min)
        return mask[:, None]

    # -- the batch buffer --

    def _allocate(self, rows: int, columns: int, like: list[tuple[Any, Any]]) -> None:
        import torch
        from transformers.cache_utils import Cache

        self._kbufs = [torch.zeros((rows, k.shape[1], columns, k.shape[3]), dtype=k.dtype, device=k.device)
                       for k, _ in like]
        self._vbufs = [torch.zeros((rows, v.shape[1], columns, v.shape[3]), dtype=v.dtype, device=v.device)
                       for _, v in like]
        self._layers: list[Any] = [
            self._buffer_layer(self._window, k, v) for k, v in zip(self._kbufs, self._vbufs, strict=True)
        ]
        self._cache = Cache(layers=self._layers)

    def _grow(self, needed: int) -> None:
        """Give the buffer room for `needed` columns (in steps of 256, so growth is rare)."""
        import torch

        columns = -(-max(needed, 1) // 256) * 256
        n, length = self._window.rows, self._window.length
        for bufs in (self._kbufs, self._vbufs):
            for i, old in enumerate(bufs):
                new = torch.zeros((old.shape[0], old.shape[1], columns, old.shape[3]), dtype=old.dtype,
                                  device=old.device)
                new[:n, :, :length] = old[:n, :, :length]
                bufs[i] = new
        for layer, k, v in zip(self._layers, self._kbufs, self._vbufs, strict=True):
            layer.kbuf, layer.vbuf = k, v
        self._decode_inputs = None

    def _merge(self, seqs: list[_Seq], pads: list[int], cache: Any, width: int) -> None:
        """Append the newcomers' rows (their prefill cache, `width` columns) to the batch buffer."""
        new_kv = [(layer.keys, layer.values) for layer in cache.layers]
        if not self._kbufs:
            self._allocate(self.max_batch_size, max(width + 256, 512), new_kv)
        n, length = self._window.rows, self._window.length
        target = max(length, width)
        if target + 1 > self._kbufs[0].shape[2]:
            self._grow(target + 1)
        if target > length and n:  # newcomers are longer: shift the running rows right
            shift = target - length
            for buf in (*self._kbufs, *self._vbufs):
                buf[:n, :, shift:target] = buf[:n, :, :length].clone()
            for s in self._running:
                s.pad += shift
        offset = target - width
        rows = slice(n, n + len(seqs))
        for i, (k, v) in enumerate(new_kv):
            self._kbufs[i][rows, :, offset:target] = k
            self._vbufs[i][rows, :, offset:target] = v
        for s, pad in zip(seqs, pads, strict=True):
            s.pad = offset + pad
        self._running.extend(seqs)
        self._decode_inputs = None
        self._window.rows = n + len(seqs)
        self._window.length = target

    def _remove_rows(self, indices: list[int]) -> None:
        """Drop finished rows: move the last rows into the holes, then trim padding shared by all rows."""
        if not indices:
            return
        self._finished += len(indices)
        gone = set(indices)
        keep = [i for i in range(len(self._running)) if i not in gone]
        # Rows that stay but sit behind the first hole move down, in order.
        length = self._window.length
        moves = [(old, new) for new, old in enumerate(keep) if old != new]
        for old, new in moves:
            for buf in (*self._kbufs, *self._vbufs):
                buf[new, :, :length] = buf[old, :, :length]
        self._running = [self._running[i] for i in keep]
        self._decode_inputs = None
        self._window.rows = len(self._running)
        if not self._running:
            self._window.length = 0
            return
        common = min(s.pad for s in self._running)
        if common >= 64:  # worth one copy: fewer columns for every later step
            for buf in (*self._kbufs, *self._vbufs):
                buf[: len(keep), :, : length - common] = buf[: len(keep), :, common:length].clone()
            for s in self._running:
                s.pad -= common
            self._window.length = length - common

    # -- sampling and emitting --

    def _emit(self, seqs: list[_Seq], logits: Any) -> None:
        """Pick one token per row, send the text deltas, and retire the rows that finished (or failed)."""
        greedy = logits.argmax(dim=-1).tolist()
        finished: list[int] = []
        outputs: list[tuple[Request, Output | _Failed]] = []
        for i, s in enumerate(seqs):
            try:
                output = self._next(s, greedy[i] if s.plain else self._pick(s, logits[i]), logits, i)
            except Exception as error:
                outputs.append((s.handle, self._failure(s.handle, error)))
                finished.append(self._running.index(s))
                continue
            outputs.append((s.handle, output))
            if output.finish_reason is not None:
                finished.append(self._running.index(s))
        self._send(outputs)
        self._remove_rows(sorted(finished))

    def _pick(self, s: _Seq, logits: Any) -> int:
        """This row's token: its logits adjusted by its penalties and biases, then greedy or sampled."""
        params = s.params
        scores = logits
        if s.bias is not None:
            scores = scores.float().index_add(0, s.bias[0], s.bias[1])
        if s.counts is not None:
            scores = (scores.float() - params.frequency_penalty * s.counts
                      - params.presence_penalty * (s.counts > 0).float())
        token = int(scores.argmax()) if s.generator is None else _sample(scores, params, s.generator)
        if s.counts is not None:
            s.counts[token] += 1
        return token

    def _next(self, s: _Seq, token: int, logits: Any, row: int) -> Output:
        """Append `token` to row `row` of the batch: its text delta, and whether it ends the request."""
        params = s.params
        s.generated.append(token)
        total = len(s.handle.prompt_ids) + len(s.generated)
        reason = None
        if token in self.eos_ids and not params.ignore_eos:
            reason = "stop"
        elif len(s.generated) >= params.max_tokens or total >= self.max_model_len:
            reason = "length"
        ids = s.generated[:-1] if reason == "stop" else s.generated
        delta, hit_stop = s.text.update(ids, final=reason is not None)
        if hit_stop:
            reason = "stop"
        queue_seconds = prompt_logprobs = None
        if not s.first_output_sent:
            s.first_output_sent = True
            queue_seconds = s.admitted_at - s.handle.submitted_at
            prompt_logprobs, s.prompt_logprobs = s.prompt_logprobs, None
        logprobs = None if params.logprobs is None else (_token_logprobs(logits[row], token, params.logprobs),)
        return Output(delta, 1, reason, queue_seconds, logprobs, prompt_logprobs)


def load_tokenizer(model_path: str | Path) -> Any:
    """The model's tokenizer, its state settled. transformers turns off on the first encode a truncation or
    padding that the tokenizer's file sets, and that change raises "Already borrowed" in another thread that
    encodes at the moment; after this first encode, encoding and decoding only read the state, from any thread
    (the app tokenizes short texts on its event loop and long ones on a thread)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.encode("")
    return tokenizer


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=True))


def encode_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """Through the chat template. A template that does not know the `developer` role gets it as `system` (what
    OpenAI means by it); tool calls in the history are refused by a template that would drop them."""
    template = tokenizer.chat_template or ""
    source = template if isinstance(template, str) else " ".join(template.values())
    if "developer" not in source:
        messages = [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]
    if "tool_calls" not in source and any("tool_calls" in m for m in messages):
        raise ValueError("this model's chat template does not show tool calls to the model")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # some versions return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(tokenizer.decode([i])) for i in ids]


def context_length(config: Any) -> int:
    """The longest sequence (prompt + output) the model takes, from its config."""
    text_config = config.get_text_config(decoder=True)
    return int(getattr(text_config, "max_position_embeddings", 0) or 4096)


def vocab_size(config: Any) -> int:
    """How many token ids the model takes (its embedding rows), from its config."""
    return int(config.get_text_config(decoder=True).vocab_size)


def max_token_chars(tokenizer: Any) -> int:
    """The characters of the vocabulary's longest token. Byte-level and SentencePiece vocabularies spell
    each token with at least as many characters as its text has, so this bounds what one token can cover."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1)


def _logprob(value: float) -> float:
    return max(value, -9999.0)  # JSON has no -inf; vLLM clamps the same way


def _token_logprobs(logits: Any, token: int, top: int) -> TokenLogprobs:
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best = torch.topk(logprobs, top) if top else None
    alternatives = () if best is None else tuple(
        zip(best.indices.tolist(), map(_logprob, best.values.tolist()), strict=True))
    return token, _logprob(float(logprobs[token])), alternatives


def _prompt_logprobs(logits: Any, ids: list[int], top: int) -> tuple[TokenLogprobs | None, ...]:
    """Each prompt token's log-probability given the tokens before it (`logits` at every prompt position),
    a few hundred positions at a time so that only one slice of vocabulary-wide floats is alive at once."""
    import torch

    result: list[TokenLogprobs | None] = [None]
    step = 256
    for start in range(0, len(ids) - 1, step):
        targets = ids[start + 1 : start + 1 + step]
        logprobs = torch.log_softmax(logits[start : start + len(targets)].float(), dim=-1)
        chosen = logprobs.gather(1, torch.tensor(targets, device=logprobs.device)[:, None])[:, 0].tolist()
        if top:
            best = torch.topk(logprobs, top)
            alternatives = [tuple(zip(i, map(_logprob, v), strict=True))
                            for i, v in zip(best.indices.tolist(), best.values.tolist(), strict=True)]
        else:
            alternatives = [()] * len(targets)
        result += [(t, _logprob(c), a) for t, c, a in zip(targets, chosen, alternatives, strict=True)]
    return tuple(result)


def _sample(logits: Any, params: SamplingParams, generator: Any) -> int:
    """Temperature, then top-k, then top-p (nucleus), then one draw from the request's own generator."""
    import torch

    scores = logits.float() / params.temperature
    if 0 < params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        outside = (torch.cumsum(probs, dim=-1) - probs) > params.top_p
        sorted_scores = sorted_scores.masked_fill(outside, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(0, order, sorted_scores)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())
