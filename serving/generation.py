"""One request's choices through the engine, answered as an OpenAI body or stream.

A request becomes one engine request per choice: `n` choices of each prompt (a completions request may
carry several prompts). `Generation` submits them, iterates their deltas as they come (merged across
choices; a request of one choice is iterated directly), enforces the request timeout, cancels whatever is
left when the client goes away or the time is up, and records each choice's metrics. `respond` answers with
one JSON body, or with an SSE stream that ends in `data: [DONE]` (an error after the stream started is its
last event before that), through the shape of its endpoint (`CompletionShape`, `ChatShape`): choice
indexes, the echoed prompt, log-probabilities (their token texts decoded as `tokenizer_work`), usage.
Work asked for by nobody is not done: without `logprobs` no token text is decoded, and with one choice no
task merges deltas.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from serving import protocol as p
from serving.context import TOKEN_TEXT_COST, Prompt, ServingContext
from serving.engine import Output, RequestHandle, SamplingParams, TokenLogprobs
from serving.errors import RequestTimeout, ServingError
from serving.keys import Client

# A token of a completions logprobs list: its id, its log-probability and the best alternatives (neither
# for the first token of an echoed prompt).
_Entry = tuple[int, float | None, tuple[tuple[int, float], ...] | None]


@dataclass(eq=False)
class Choice:
    index: int
    prompt: Prompt
    handle: RequestHandle
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    prompt_logprobs: tuple[TokenLogprobs | None, ...] | None = None
    finish_reason: str | None = None
    tokens: int = 0
    in_batch_at: float = 0.0  # when the engine took it from its queue
    first_at: float | None = None
    last_at: float = 0.0
    started_streaming: bool = False
    text_offset: int = 0  # completions logprobs: characters of this choice sent so far


class Generation:
    def __init__(self, ctx: ServingContext, prompts: list[Prompt], n: int,
                 params_of: Callable[[Prompt, int], SamplingParams], arrived: float,
                 client: Client | None = None) -> None:
        self.ctx = ctx
        self.prompts = prompts
        self.client = client  # whose limits the answer's tokens count against
        self.arrived = arrived  # when the request came in: TTFT and end-to-end latency include tokenizing
        self.choices: list[Choice] = []
        self._ended = False
        self.ended_as = "abort"  # what the choices that did not finish count as (abort, error), once closed
        try:
            for i, prompt in enumerate(prompts):
                ctx.metrics.prompt_tokens.inc(len(prompt.ids))
                for j in range(n):
                    handle = ctx.engine.submit(prompt.ids, params_of(prompt, j))
                    self.choices.append(Choice(i * n + j, prompt, handle))
        except ServingError:
            self.close(reason="error")
            raise

    def usage(self) -> p.Usage:
        return p.usage(sum(len(prompt.ids) for prompt in self.prompts), sum(c.tokens for c in self.choices))

    async def events(self) -> AsyncIterator[tuple[Choice, Output]]:
        """Each delta of each choice as it comes, until all are finished."""
        reason = "abort"
        try:
            async with asyncio.timeout(self.ctx.settings.request_timeout_seconds):
                if len(self.choices) == 1:  # the common case, without a merge: one delta in, one out
                    choice = self.choices[0]
                    async for out in choice.handle:
                        if out.finish_reason != "cancelled":  # cancelled here: nothing left to report
                            self._record(choice, out)
                            yield choice, out
                else:
                    async for choice, out in self._merged():
                        if out.finish_reason != "cancelled":
                            self._record(choice, out)
                            yield choice, out
        except TimeoutError:
            raise RequestTimeout(
                f"the request did not finish within {self.ctx.settings.request_timeout_seconds:g}s"
            ) from None
        except ServingError:
            reason = "error"
            raise
        finally:
            self.close(reason)

    async def _merged(self) -> AsyncIterator[tuple[Choice, Output]]:
        merged: asyncio.Queue[tuple[Choice, Output | ServingError | None]] = asyncio.Queue()

        async def pump(choice: Choice) -> None:
            try:
                async for out in choice.handle:
                    merged.put_nowait((choice, out))
            except ServingError as error:
                merged.put_nowait((choice, error))
            finally:
                merged.put_nowait((choice, None))

        pumps = [asyncio.ensure_future(pump(choice)) for choice in self.choices]
        try:
            running = len(pumps)
            while running:
                choice, item = await merged.get()
                if item is None:
                    running -= 1
                elif isinstance(item, ServingError):
                    raise item
                else:
                    yield choice, item
        finally:
            for task in pumps:
                task.cancel()

    def _record(self, choice: Choice, out: Output) -> None:
        metrics = self.ctx.metrics
        now = time.monotonic()
        if out.queue_seconds is not None:
            metrics.queue.observe(out.queue_seconds)
            choice.in_batch_at = choice.handle.submitted_at + out.queue_seconds
        if out.prompt_logprobs is not None:
            choice.prompt_logprobs = out.prompt_logprobs
        if out.logprobs:
            choice.logprobs.extend(out.logprobs)
        if choice.first_at is None:
            metrics.ttft.observe(now - self.arrived)
            choice.first_at = now
        elif out.new_tokens:  # a merged delta of k tokens: k gaps of equal share
            gap = (now - choice.last_at) / out.new_tokens
            for _ in range(out.new_tokens):
                metrics.itl.observe(gap)
        choice.last_at = now
        choice.text.append(out.text)
        choice.tokens += out.new_tokens
        metrics.generation_tokens.inc(out.new_tokens)
        if out.finish_reason is not None:
            choice.finish_reason = out.finish_reason
            metrics.e2e.observe(now - self.arrived)
            metrics.finished(out.finish_reason, prompt_tokens=len(choice.prompt.ids), generation_tokens=choice.tokens,
                             max_tokens=choice.handle.params.max_tokens,
                             prefill=max(0.0, choice.first_at - choice.in_batch_at), decode=now - choice.first_at)

    def close(self, reason: str = "abort") -> None:
        """Cancel the choices still running (counted as `reason`), and count the tokens of the answer against
        its client (what was generated, however it ended); a no-op once done."""
        if self._ended:
            return
        self._ended = True
        self.ended_as = reason
        for choice in self.choices:
            if choice.finish_reason is None:
                choice.handle.cancel()
                self.ctx.metrics.ended(reason)
        usage = self.usage()
        self.ctx.charge(self.client, usage.prompt_tokens, usage.completion_tokens)

    async def collect(self, request: Request) -> bool:
        """Run every choice to its end (True), or until the client goes away (False: the work is cancelled)."""

        async def run() -> None:
            async for _ in self.events():
                pass

        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        work = asyncio.ensure_future(run())
        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not work.done():
                work.cancel()
                await asyncio.wait({work})  # let it unwind: its cleanup cancels the engine's work
        if work.cancelled():
            return False
        work.result()  # the request's error, if it failed
        return True


class _Shape:
    """How one endpoint's bodies and chunks look. A chunk is made without awaiting anything; when it carries
    log-probabilities, their token texts are decoded before, from `entries`."""

    def __init__(self, ctx: ServingContext, gen: Generation, rid: str, with_logprobs: bool) -> None:
        self.ctx = ctx
        self.gen = gen
        self.rid = rid
        self.created = p.now()
        self.with_logprobs = with_logprobs

    def entries(self, choice: Choice, out: Output) -> Sequence[_Entry | TokenLogprobs]:
        """The tokens whose log-probabilities the chunk of `out` carries."""
        raise NotImplementedError

    def chunk(self, choice: Choice, out: Output, texts: dict[int, str]) -> BaseModel | None:
        raise NotImplementedError

    async def body(self) -> BaseModel:
        raise NotImplementedError

    def usage_chunk(self) -> BaseModel:
        raise NotImplementedError

    async def texts(self, entries: Sequence[_Entry | TokenLogprobs]) -> dict[int, str]:
        """The text of every token named in `entries` (chosen and alternatives)."""
        ids = {entry[0] for entry in entries} | {i for entry in entries for i, _ in entry[2] or ()}
        ordered = sorted(ids)
        texts = await self.ctx.tokenizer_work(self.ctx.engine.token_texts, ordered, TOKEN_TEXT_COST * len(ordered))
        return dict(zip(ordered, texts, strict=True))


class CompletionShape(_Shape):
    def __init__(self, ctx: ServingContext, gen: Generation, req: p.CompletionRequest) -> None:
        super().__init__(ctx, gen, p.new_id("cmpl"), req.logprobs is not None)
        self.echo = bool(req.echo)

    def _response(self, choices: list[p.CompletionChoice], usage: p.Usage | None = None) -> p.CompletionResponse:
        return p.CompletionResponse(id=self.rid, created=self.created, model=self.ctx.model_name, choices=choices,
                                    usage=usage)

    def _echoed(self, choice: Choice) -> list[_Entry]:
        """The prompt's tokens as logprobs entries (the first has no log-probability)."""
        ids, scored = choice.prompt.ids, choice.prompt_logprobs or ()
        return [(ids[0], None, None), *(entry for entry in scored[1:] if entry is not None)]

    def _logprobs(self, choice: Choice, entries: Sequence[_Entry], texts: dict[int, str]) -> p.CompletionLogprobs:
        tokens = [texts[entry[0]] for entry in entries]
        offsets = []
        for token in tokens:
            offsets.append(choice.text_offset)
            choice.text_offset += len(token)
        return p.CompletionLogprobs(
            tokens=tokens,
            token_logprobs=[entry[1] for entry in entries],
            top_logprobs=[None if entry[2] is None else {texts[i]: lp for i, lp in entry[2]} for entry in entries],
            text_offset=offsets,
        )

    def entries(self, choice: Choice, out: Output) -> list[_Entry]:
        echoed = self._echoed(choice) if self.echo and not choice.started_streaming else []
        return [*echoed, *(out.logprobs or ())]

    def chunk(self, choice: Choice, out: Output, texts: dict[int, str]) -> BaseModel | None:
        entries = self.entries(choice, out) if self.with_logprobs else ()
        text = out.text
        if not choice.started_streaming:
            choice.started_streaming = True
            if self.echo:
                text = choice.prompt.text + text
        if not text and out.finish_reason is None and not entries:
            return None
        logprobs = self._logprobs(choice, entries, texts) if self.with_logprobs else None
        return p.CompletionResponse(id=self.rid, created=self.created, model=self.ctx.model_name, choices=[
            p.CompletionChoice(index=choice.index, text=text, logprobs=logprobs, finish_reason=out.finish_reason)])

    async def body(self) -> BaseModel:
        choices = []
        for choice in self.gen.choices:
            text = "".join(choice.text)
            logprobs = None
            if self.with_logprobs:
                entries = [*(self._echoed(choice) if self.echo else ()), *choice.logprobs]
                logprobs = self._logprobs(choice, entries, await self.texts(entries))
            choices.append(p.CompletionChoice(index=choice.index, text=choice.prompt.text + text if self.echo else text,
                                              logprobs=logprobs, finish_reason=choice.finish_reason))
        return self._response(choices, self.gen.usage())

    def usage_chunk(self) -> BaseModel:
        return self._response([], self.gen.usage())


class ChatShape(_Shape):
    def __init__(self, ctx: ServingContext, gen: Generation, req: p.ChatCompletionRequest) -> None:
        super().__init__(ctx, gen, p.new_id("chatcmpl"), bool(req.logprobs))

    @staticmethod
    def _logprobs(entries: Sequence[TokenLogprobs], texts: dict[int, str]) -> p.ChoiceLogprobs:
        def top(token: int, logprob: float) -> p.TopLogprob:
            text = texts[token]
            return p.TopLogprob(token=text, logprob=logprob, bytes=list(text.encode()))

        return p.ChoiceLogprobs(content=[
            p.TokenLogprob(**top(token, logprob).model_dump(), top_logprobs=[top(i, lp) for i, lp in alternatives])
            for token, logprob, alternatives in entries
        ])

    def entries(self, choice: Choice, out: Output) -> Sequence[TokenLogprobs]:
        return out.logprobs or ()

    def chunk(self, choice: Choice, out: Output, texts: dict[int, str]) -> BaseModel | None:
        if not out.text and out.finish_reason is None and not (self.with_logprobs and out.logprobs):
            return None
        delta = p.ChatDelta(role=None if choice.started_streaming else "assistant", content=out.text)
        choice.started_streaming = True
        logprobs = self._logprobs(out.logprobs or (), texts) if self.with_logprobs else None
        return p.ChatCompletionChunk(id=self.rid, created=self.created, model=self.ctx.model_name, choices=[
            p.ChatChunkChoice(index=choice.index, delta=delta, logprobs=logprobs, finish_reason=out.finish_reason)])

    async def body(self) -> BaseModel:
        choices = []
        for choice in self.gen.choices:
            logprobs = self._logprobs(choice.logprobs, await self.texts(choice.logprobs)) if self.with_logprobs \
                else None
            choices.append(p.ChatChoice(index=choice.index, message=p.AssistantMessage(content="".join(choice.text)),
                                        logprobs=logprobs, finish_reason=choice.finish_reason))
        return p.ChatCompletionResponse(id=self.rid, created=self.created, model=self.ctx.model_name,
                                        choices=choices, usage=self.gen.usage())

    def usage_chunk(self) -> BaseModel:
        return p.ChatCompletionChunk(id=self.rid, created=self.created, model=self.ctx.model_name, choices=[],
                                     usage=self.gen.usage())


async def respond(gen: Generation, shape: _Shape, request: Request, req: p.CompletionRequest |
                  p.ChatCompletionRequest) -> Response:
    """Answer as one JSON body or as an SSE stream."""
    if not req.stream:
        if not await gen.collect(request):
            return Response(status_code=499)  # the client has gone (nginx's code): nobody reads this
        return Response((await shape.body()).model_dump_json(), media_type="application/json")

    continuous_usage, include_usage = req.continuous_usage, req.include_usage

    async def events() -> AsyncIterator[str]:
        no_texts: dict[int, str] = {}
        try:
            async for choice, out in gen.events():
                texts = await shape.texts(shape.entries(choice, out)) if shape.with_logprobs else no_texts
                chunk: Any = shape.chunk(choice, out, texts)
                if chunk is not None:
                    if continuous_usage:
                        chunk.usage = gen.usage()
                    yield p.sse(chunk)
            if include_usage:
                yield p.sse(shape.usage_chunk())
        except ServingError as error:  # the stream has started: report in-band
            yield p.sse(error.body())
        finally:
            gen.close()
        yield p.SSE_DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
