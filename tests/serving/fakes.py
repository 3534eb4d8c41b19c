"""A fake engine behind the engine interface: words in, scripted words out, controllable timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from serving.engine import Engine, Output, RequestHandle, SamplingParams, _Failed
from serving.errors import EngineDead

SCRIPT = [
    "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog",
    "and", "runs", "away", "into", "the", "woods",
]


class FakeEngine(Engine):
    """One token per word (token id i is the i-th word of SCRIPT); replies with SCRIPT, one word per delta,
    until max_tokens or the script ends. With logprobs, token i has log-probability -i/10."""

    def __init__(self, *, loaded: bool = True, max_model_len: int = 100) -> None:
        self.model_name = "fake"
        self.max_model_len = max_model_len
        self.vocab_size = len(SCRIPT)
        self.max_token_chars = 5
        self.is_loaded = loaded
        self.is_dead = False
        self.step_at = time.monotonic()
        self.gate = asyncio.Event()  # cleared: requests wait before their first word
        self.gate.set()
        self.fail_after: int | None = None  # fail each request after this many words
        self.handles: list[RequestHandle] = []
        self.extra_running = 0  # pretend load, for the queue limit
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    @property
    def loaded(self) -> bool:
        return self.is_loaded

    @property
    def dead(self) -> bool:
        return self.is_dead

    @property
    def last_step_at(self) -> float:
        return self.step_at

    @property
    def num_running(self) -> int:
        return self.extra_running + sum(1 for h in self.handles if not getattr(h, "finished", False))

    @property
    def num_waiting(self) -> int:
        return 0

    @property
    def load_seconds(self) -> float | None:
        return 1.5 if self.is_loaded else None

    @property
    def kv_cache_usage(self) -> float:
        return 0.25

    def encode_prompt(self, text: str) -> list[int]:
        return [i % len(SCRIPT) for i in range(len(text.split()))]

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        if messages[-1]["role"] == "assistant":
            raise ValueError("the conversation must end with a user turn")
        return [i % len(SCRIPT) for i in range(2 + sum(len(m["content"].split()) for m in messages))]

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        return [SCRIPT[i] for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(SCRIPT[i] for i in ids)

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams) -> RequestHandle:
        handle = RequestHandle(prompt_ids, params)
        self.handles.append(handle)
        asyncio.get_running_loop().create_task(self._generate(handle))
        return handle

    async def _generate(self, handle: RequestHandle) -> None:
        params = handle.params
        words = SCRIPT[: params.max_tokens]
        try:
            await self.gate.wait()
            for i, word in enumerate(words):
                if handle.cancelled.is_set():
                    handle.push(Output("", 0, "cancelled"))
                    return
                if self.fail_after is not None and i == self.fail_after:
                    handle.push(_Failed(EngineDead("the fake engine failed")))
                    return
                last = i == len(words) - 1
                reason = ("length" if len(words) == params.max_tokens else "stop") if last else None
                logprobs = None if params.logprobs is None else (
                    (i, -i / 10, tuple((j, -j / 10) for j in range(params.logprobs))),)
                prompt_logprobs = None
                if i == 0 and params.prompt_logprobs is not None:
                    prompt_logprobs = (None, *((t, -t / 10, ()) for t in handle.prompt_ids[1:]))
                handle.push(Output(("" if i == 0 else " ") + word, 1, reason, 0.01 if i == 0 else None, logprobs,
                                   prompt_logprobs))
                await asyncio.sleep(0)
        finally:
            handle.finished = True  # type: ignore[attr-defined]
