"""What the routes check and prepare before a request reaches the engine.

`ServingContext` holds what one app shares: settings, engine, metrics, lifecycle, the clients' API keys and
their limits. It says whether the server is alive and ready, identifies the client and holds it to its
limits (serving.keys, serving.limits), admits a request or refuses it (draining, loading, engine dead, queue
full), turns prompts and conversations into token ids (see `tokenizer_work`: a long text on a thread of its
own, never on the event loop, where every stream and probe waits), checks them against the limits
(characters before tokenizing, tokens after), and builds each choice's sampling parameters from the
request, defaults applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

from serving import manifest
from serving import protocol as p
from serving.engine import Engine, SamplingParams
from serving.errors import (
    BadRequest,
    EngineDead,
    NotFound,
    NotReady,
    Overloaded,
    RateLimited,
    ServingError,
    quote,
    shorten,
)
from serving.keys import ApiKeys, Client
from serving.limits import Limits
from serving.metrics import Metrics
from serving.settings import Settings

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
GREEDY_BELOW = 1e-5  # a temperature below this is greedy, as in vLLM (dividing logits by it would overflow)

T = TypeVar("T")
A = TypeVar("A")

# Tokenizer work up to the cost of tokenizing this many characters runs on the event loop, longer work on
# the tokenizer thread. Measured on this project's 2-core machine: 1,024 characters take 0.3 ms to tokenize,
# while under load at concurrency 16 the hand-off to the thread and back took 1.3-1.8 ms (both threads wait
# for the interpreter lock). That delay holds each new request out of the batch, and cost 5% of throughput.
INLINE_TOKENIZER_WORK = 1024
# Decoding token ids one by one (a log-probability's token texts) costs about six characters' tokenizing each
# (1.6 us against 0.27 us); decoding a sequence of ids (an echoed prompt) less than one.
TOKEN_TEXT_COST = 6


class Prompt(NamedTuple):
    ids: list[int]
    text: str  # what the ids stand for (a conversation: its rendered template), for echo


class Lifecycle:
    """Draining flag and the count of generation requests in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin_drain(self) -> None:
        self.draining = True

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when every request in flight finished within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False


class ServingContext:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.model_name = settings.served_model_name
        self.revision = settings.model_revision or _manifest_revision(settings) or "none"
        self.lifecycle = Lifecycle()
        self.metrics = Metrics(
            self.model_name,
            self.revision,
            running=lambda: engine.num_running,
            waiting=lambda: engine.num_waiting,
            load_seconds=lambda: engine.load_seconds or 0.0,
            kv_cache_usage=lambda: engine.kv_cache_usage,
        )
        self.reserved = 0  # choices admitted and not yet submitted (their prompts are being tokenized)
        # One thread is enough to keep long texts off the event loop (the Rust tokenizer does not hold the
        # interpreter lock while it works). Short ones are tokenized on the loop meanwhile: the engine settles
        # the tokenizer's state when it loads it, so that encoding and decoding only read it after that.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self.keys = ApiKeys(settings.api_keys_file, settings.key)
        store = settings.limits_store_url.get_secret_value() if settings.limits_store_url else None
        self.limits = Limits.from_url(store, on_store_error=self.metrics.limits_store_errors.inc)
        self._charges: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self._charges:
            await asyncio.wait(self._charges, timeout=1.0)
        await self.limits.close()

    # -- clients --

    async def hold_to_limits(self, client: Client) -> None:
        """Count one request of the client, or refuse it (429) when the client is over a limit this minute."""
        decision = await self.limits.admit(client)
        if not decision.allowed:
            self.metrics.rate_limited(client.id, decision.kind)
            raise RateLimited(decision.kind, decision.limit, decision.used, decision.retry_after)
        self.metrics.admitted(client.id)

    def charge(self, client: Client | None, prompt_tokens: int, generation_tokens: int) -> None:
        """Count an answer's tokens against its client (in the background: the answer is already out)."""
        if client is None:
            return
        self.metrics.client_tokens(client.id, prompt_tokens, generation_tokens)
        if client.tokens_per_minute:
            task = asyncio.ensure_future(self.limits.charge(client, prompt_tokens + generation_tokens))
            self._charges.add(task)
            task.add_done_callback(self._charges.discard)

    async def tokenizer_work(self, function: Callable[[A], T], argument: A, size: int) -> T:
        """`function(argument)`, where `size` (in characters to tokenize, or what costs as much) says how long it
        may take: on the event loop up to INLINE_TOKENIZER_WORK, on the tokenizer thread beyond."""
        if size <= INLINE_TOKENIZER_WORK:
            return function(argument)
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, argument)

    # -- health --

    def _stalled(self) -> float | None:
        stalled = time.monotonic() - self.engine.last_step_at
        return stalled if self.engine.loaded and stalled > self.settings.stall_seconds else None

    def alive(self) -> tuple[bool, str]:
        """Alive unless the engine loop has died or stopped stepping (then the kubelet restarts the pod)."""
        if self.engine.dead:
            return False, "engine loop has failed"
        stalled = self._stalled()
        if stalled is not None:
            return False, f"engine loop has not stepped for {stalled:.0f}s"
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        if self.lifecycle.draining:
            return False, "draining"
        if self.engine.dead:
            return False, "engine loop has failed"
        if not self.engine.loaded:
            return False, "model is loading"
        stalled = self._stalled()
        if stalled is not None:
            return False, f"engine loop has not stepped for {stalled:.0f}s"
        return True, "ready"

    def refuse_unless_serving(self) -> None:
        """Refuse any /v1 request the server cannot serve now: draining, engine dead, still loading."""
        error: ServingError | None = None
        if self.lifecycle.draining:
            error, reason = NotReady("the server is shutting down", code="draining"), "draining"
        elif self.engine.dead:
            error, reason = EngineDead("the engine has failed"), "engine_dead"
        elif not self.engine.loaded:
            error, reason = NotReady("the model is still loading", code="loading"), "loading"
        if error is not None:
            self.metrics.rejected(reason)
            raise error

    @contextlib.contextmanager
    def admit(self, choices: int) -> Iterator[None]:
        """Take `choices` sequences into the queue, or refuse (counted by reason); hold their places until
        they are submitted."""
        self.refuse_unless_serving()
        engine = self.engine
        queued = engine.num_running + engine.num_waiting + self.reserved
        if queued + choices > self.settings.max_queue:
            self.metrics.rejected("queue_full")
            raise Overloaded(
                f"too many requests: {engine.num_running} running and {engine.num_waiting + self.reserved} "
                f"waiting (limit {self.settings.max_queue}); retry later"
            )
        self.reserved += choices
        try:
            yield
        finally:
            self.reserved -= choices

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise NotFound(f"model {quote(model)} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    def check_choices(self, prompts: int, n: int) -> None:
        """Every choice is a sequence of the batch: a request cannot ask for more than the batch holds."""
        limit = self.settings.max_batch_size
        if prompts * n > limit:
            asked = f"{prompts} prompts x n={n}" if prompts > 1 else f"n={n}"
            raise BadRequest(f"{asked} asks for {prompts * n} sequences; this server runs at most {limit} at once",
                             param="n" if n > 1 else "prompt")

    # -- prompts --

    @property
    def input_limit(self) -> int:
        """The longest prompt taken, in tokens: the server's limit, and one short of the model's context."""
        return min(self.settings.max_input_tokens, self.engine.max_model_len - 1)

    def _too_long(self, param: str, detail: str) -> BadRequest:
        # vLLM's wording: litellm and other clients recognise "maximum context length" as a context-window error.
        return BadRequest(f"This model's maximum context length is {self.input_limit} tokens for the prompt. "
                          f"However, your {param} {detail}. Please reduce the length of the {param}.",
                          param=param, code="context_length_exceeded")

    def _check_characters(self, chars: int, param: str) -> None:
        """Before tokenizing: a text longer than the limit times the longest token cannot fit."""
        if chars > self.input_limit * self.engine.max_token_chars:
            raise self._too_long(param, f"{'are' if param == 'messages' else 'is'} {chars} characters long, more "
                                        f"than {self.input_limit} tokens can hold")

    def _check_tokens(self, count: int, param: str) -> None:
        if count > self.input_limit:
            raise self._too_long(param, f"resulted in {count} tokens")

    async def completion_prompts(self, req: p.CompletionRequest) -> list[Prompt]:
        prompts = req.prompts
        for i, prompt in enumerate(prompts):  # the cheap checks first
            if isinstance(prompt, str):
                self._check_characters(len(prompt), "prompt")
            else:
                self._check_token_ids(prompt, f"prompt[{i}]" if len(prompts) > 1 else "prompt")
        size = sum(len(prompt) for prompt in prompts)  # the request's work, on one side or the other
        result = []
        for prompt in prompts:
            if isinstance(prompt, str):
                ids, text = await self.tokenizer_work(self.engine.encode_prompt, prompt, size), prompt
            else:
                text = await self.tokenizer_work(self.engine.decode, prompt, size) if req.echo else ""
                ids = prompt
            self._check_tokens(len(ids), "prompt")
            result.append(Prompt(ids, text))
        return result

    def _check_token_ids(self, ids: list[int], where: str) -> None:
        vocab = self.engine.vocab_size
        for j, token in enumerate(ids):
            if token >= vocab:
                raise BadRequest(f"{where}[{j}]: token id {token} is out of range; this model's ids are 0 to "
                                 f"{vocab - 1}", param="prompt")

    async def chat_prompt(self, req: p.ChatCompletionRequest) -> Prompt:
        self._check_characters(sum(len(m.text) for m in req.messages), "messages")
        messages = [m.for_template() for m in req.messages]
        try:
            ids = await self.tokenizer_work(self.engine.encode_chat, messages,
                                            sum(m.template_size for m in req.messages))
        except Exception as exc:  # the model's chat template refuses this conversation
            raise BadRequest(f"messages: the chat template rejected them: {shorten(str(exc))}",
                             param="messages") from exc
        self._check_tokens(len(ids), "messages")
        return Prompt(ids, "")

    # -- sampling --

    def sampling(self, req: p.CompletionRequest | p.ChatCompletionRequest, *, max_tokens: int | None,
                 max_tokens_param: str, default_max_tokens: int, logprobs: int | None,
                 prompt_logprobs: int | None) -> SamplingParams:
        """The sampling parameters a request asks for (its max_tokens not yet fitted to a prompt)."""
        limit = self.settings.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise BadRequest(f"{max_tokens_param} is {max_tokens}; the maximum is {limit}", param=max_tokens_param)
        temperature = 1.0 if req.temperature is None else req.temperature
        return SamplingParams(
            max_tokens=max_tokens if max_tokens is not None else min(default_max_tokens, limit),
            temperature=0.0 if temperature < GREEDY_BELOW else temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=max(req.top_k or 0, 0),
            seed=req.seed,
            stop=req.stop_list,
            ignore_eos=bool(req.ignore_eos),
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            logit_bias=self._logit_bias(req.logit_bias),
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )

    def _logit_bias(self, bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
        pairs = tuple((int(key), value) for key, value in (bias or {}).items())
        for token, _ in pairs:
            if token >= self.engine.vocab_size:
                raise BadRequest(f"logit_bias: token id {token} is out of range; this model's ids are 0 to "
                                 f"{self.engine.vocab_size - 1}", param="logit_bias")
        return pairs

    def for_choice(self, params: SamplingParams, prompt: Prompt, choice: int) -> SamplingParams:
        """One choice of one prompt: its max_tokens within the context left, and its own seed."""
        seed = params.seed if params.seed is None or choice == 0 else (params.seed + choice) % 2**64
        return dataclasses.replace(params, max_tokens=min(params.max_tokens, self.engine.max_model_len
                                                          - len(prompt.ids)), seed=seed)


def _manifest_revision(settings: Settings) -> str | None:
    """The revision the model directory's manifest names, for a server run without SERVESTACK_MODEL_REVISION."""
    try:
        found = manifest.read(settings.model_path)
    except (manifest.ManifestError, OSError):
        return None
    return found.revision if found is not None else None
