"""The HTTP layer: `build_app(settings, engine)`.

Routes parse, check limits, call the engine and shape OpenAI responses; they never touch torch. The
lifespan starts the engine (loading happens in the background: until it is done, readiness and the
generation routes answer 503) and stops it. `Lifecycle` holds the draining flag and counts requests in
flight, so that a SIGTERM can wait for them (see serving.__main__).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from serving import protocol as p
from serving.engine import Engine, Output, RequestHandle, SamplingParams
from serving.errors import (
    BadRequest,
    EngineDead,
    NotFound,
    NotReady,
    Overloaded,
    RequestTimeout,
    ServingError,
    Unauthorized,
    install_error_handlers,
)
from serving.metrics import Metrics
from serving.settings import Settings

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


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


class InFlightMiddleware:
    """Counts generation requests from their first byte until their response is fully sent (or the client
    is gone), streams included, for the drain to wait on."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        with self.lifecycle.track():
            await self.app(scope, receive, send)


class _Context:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.model_name = settings.served_model_name
        self.lifecycle = Lifecycle()
        self.metrics = Metrics(
            self.model_name,
            running=lambda: engine.num_running,
            waiting=lambda: engine.num_waiting,
            load_seconds=lambda: engine.load_seconds or 0.0,
        )

    def ready(self) -> tuple[bool, str]:
        engine = self.engine
        if self.lifecycle.draining:
            return False, "draining"
        if engine.dead:
            return False, "engine loop has failed"
        if not engine.loaded:
            return False, "model is loading"
        stalled = time.monotonic() - engine.last_step_at
        if stalled > self.settings.stall_seconds:
            return False, f"engine loop has not stepped for {stalled:.0f}s"
        return True, "ready"

    def admit(self) -> None:
        """Refuse a generation request the server cannot take now (counted by reason)."""
        engine = self.engine
        error: ServingError | None = None
        if self.lifecycle.draining:
            error, reason = NotReady("the server is shutting down", code="draining"), "draining"
        elif engine.dead:
            error, reason = EngineDead("the engine has failed"), "engine_dead"
        elif not engine.loaded:
            error, reason = NotReady("the model is still loading", code="loading"), "loading"
        elif engine.num_running + engine.num_waiting >= self.settings.max_queue:
            error = Overloaded(
                f"too many requests: {engine.num_running} running and {engine.num_waiting} waiting "
                f"(limit {self.settings.max_queue}); retry later"
            )
            reason = "queue_full"
        if error is not None:
            self.metrics.rejected(reason)
            raise error

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise NotFound(f"model {model!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    def sampling(self, req: p._Sampling, prompt_len: int, max_tokens: int | None, default: int,
                 prompt_param: str) -> SamplingParams:
        limit = self.settings.max_tokens
        if prompt_len > self.settings.max_input_tokens:
            raise BadRequest(
                f"the prompt has {prompt_len} tokens; the maximum is {self.settings.max_input_tokens}",
                param=prompt_param, code="context_length_exceeded")
        if max_tokens is not None and max_tokens > limit:
            raise BadRequest(f"max_tokens is {max_tokens}; the maximum is {limit}", param="max_tokens")
        chosen = max_tokens if max_tokens is not None else min(default, limit)
        room = self.engine.max_model_len - prompt_len
        if room < 1:
            raise BadRequest(f"the prompt has {prompt_len} tokens, the model's context is "
                             f"{self.engine.max_model_len}", param=prompt_param, code="context_length_exceeded")
        return SamplingParams(
            max_tokens=min(chosen, room),
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=max(req.top_k, 0),
            seed=req.seed,
            stop=req.stop_list,
            ignore_eos=req.ignore_eos,
        )


class _Generation:
    """One request through the engine: timeout, metrics, and cancellation when abandoned."""

    def __init__(self, ctx: _Context, handle: RequestHandle) -> None:
        self.ctx = ctx
        self.handle = handle
        self.prompt_tokens = len(handle.prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        ctx.metrics.prompt_tokens.inc(self.prompt_tokens)

    async def deltas(self) -> AsyncIterator[Output]:
        metrics = self.ctx.metrics
        started = time.monotonic()
        last: float | None = None
        try:
            async with asyncio.timeout(self.ctx.settings.request_timeout_seconds):
                async for out in self.handle:
                    now = time.monotonic()
                    if out.queue_seconds is not None:
                        metrics.queue.observe(out.queue_seconds)
                    if out.finish_reason == "cancelled":
                        return
                    if last is None:
                        metrics.ttft.observe(now - started)
                    else:  # a merged delta of k tokens: k gaps of equal share
                        for _ in range(out.new_tokens):
                            metrics.itl.observe((now - last) / out.new_tokens)
                    last = now
                    self.completion_tokens += out.new_tokens
                    metrics.generation_tokens.inc(out.new_tokens)
                    if out.finish_reason is not None:
                        self.finish_reason = out.finish_reason
                        metrics.success(out.finish_reason)
                        metrics.e2e.observe(now - started)
                    yield out
        except TimeoutError:
            metrics.rejected("timeout")
            raise RequestTimeout(
                f"the request did not finish within {self.ctx.settings.request_timeout_seconds:g}s"
            ) from None
        finally:
            if self.finish_reason is None:
                self.handle.cancel()

    async def collect(self, request: Request) -> str:
        """The whole text; cancels the work if the client goes away first."""

        async def text() -> str:
            return "".join([out.text async for out in self.deltas()])

        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        work = asyncio.ensure_future(text())
        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not work.done():
                work.cancel()
                self.handle.cancel()
        if work.cancelled():
            raise asyncio.CancelledError("client disconnected")
        return work.result()

    def usage(self) -> p.Usage:
        return p.usage(self.prompt_tokens, self.completion_tokens)


def build_app(settings: Settings, engine: Engine) -> FastAPI:
    ctx = _Context(settings, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="servestack", lifespan=lifespan)
    app.state.ctx = ctx
    app.state.lifecycle = ctx.lifecycle
    app.add_middleware(InFlightMiddleware, lifecycle=ctx.lifecycle)
    install_error_handlers(app)

    @app.get("/health/live")
    async def live() -> JSONResponse:
        if engine.dead:
            return JSONResponse({"status": "engine loop has failed"}, status_code=503)
        return JSONResponse({"status": "alive"})

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        ok, why = ctx.ready()
        return JSONResponse({"status": why}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def require_key(request: Request) -> None:
        key = settings.key
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            ctx.metrics.rejected("unauthorized")
            raise Unauthorized("missing or invalid API key (send Authorization: Bearer <key>)")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @v1.get("/models")
    async def models() -> p.ModelList:
        return p.ModelList(data=[p.ModelCard(id=ctx.model_name, created=p.now())])

    @v1.post("/completions", response_model=None)
    async def completions(req: p.CompletionRequest, request: Request) -> Response:
        ctx.check_model(req.model)
        ctx.admit()
        text = req.prompt if isinstance(req.prompt, str) else str(req.prompt[0])
        ids = engine.encode_prompt(text)
        params = ctx.sampling(req, len(ids), req.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS, "prompt")
        rid, created = p.new_id("cmpl"), p.now()

        def chunk(text: str, finish: str | None) -> p.CompletionResponse:
            return p.CompletionResponse(id=rid, created=created, model=ctx.model_name,
                                        choices=[p.CompletionChoice(text=text, finish_reason=finish)])

        def final_usage(gen: _Generation) -> p.CompletionResponse:
            return p.CompletionResponse(id=rid, created=created, model=ctx.model_name, choices=[],
                                        usage=gen.usage())

        return await _respond(ctx, request, ids, params, req, chunk, final_usage)

    @v1.post("/chat/completions", response_model=None)
    async def chat(req: p.ChatCompletionRequest, request: Request) -> Response:
        ctx.check_model(req.model)
        ctx.admit()
        messages = [{"role": m.role, "content": m.text} for m in req.messages]
        try:
            ids = engine.encode_chat(messages)
        except Exception as exc:  # the model's chat template refuses this conversation
            raise BadRequest(f"messages: the chat template rejected them: {exc}", param="messages") from exc
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        try:
            params = ctx.sampling(req, len(ids), max_tokens, settings.max_tokens, "messages")
        except BadRequest as exc:
            if exc.param == "max_tokens":
                exc.param = param
            raise
        rid, created = p.new_id("chatcmpl"), p.now()
        first = True

        def chunk(text: str, finish: str | None) -> p.ChatCompletionChunk:
            nonlocal first
            delta = p.ChatDelta(role="assistant" if first else None, content=text)
            first = False
            return p.ChatCompletionChunk(id=rid, created=created, model=ctx.model_name,
                                         choices=[p.ChatChunkChoice(delta=delta, finish_reason=finish)])

        def final_usage(gen: _Generation) -> p.ChatCompletionChunk:
            return p.ChatCompletionChunk(id=rid, created=created, model=ctx.model_name, choices=[],
                                         usage=gen.usage())

        def whole(text: str, gen: _Generation) -> p.ChatCompletionResponse:
            return p.ChatCompletionResponse(
                id=rid, created=created, model=ctx.model_name, usage=gen.usage(),
                choices=[p.ChatChoice(message=p.AssistantMessage(content=text), finish_reason=gen.finish_reason)])

        return await _respond(ctx, request, ids, params, req, chunk, final_usage, whole)

    app.include_router(v1)
    return app


async def _respond(
    ctx: _Context,
    request: Request,
    ids: list[int],
    params: SamplingParams,
    req: p._Sampling,
    chunk: Callable[[str, str | None], Any],
    final_usage: Callable[[_Generation], Any],
    whole: Callable[[str, _Generation], Any] | None = None,
) -> Response:
    """Submit, then answer as one JSON body or as an SSE stream."""
    gen = _Generation(ctx, ctx.engine.submit(ids, params))

    if not req.stream:
        text = await gen.collect(request)
        if whole is not None:
            body = whole(text, gen)
        else:
            body = chunk(text, gen.finish_reason)
            body.usage = gen.usage()
        return JSONResponse(body.model_dump(mode="json"))

    async def events() -> AsyncIterator[str]:
        try:
            async for out in gen.deltas():
                if out.text or out.finish_reason is not None:
                    yield p.sse(chunk(out.text, out.finish_reason))
            if req.include_usage:
                yield p.sse(final_usage(gen))
        except ServingError as error:  # the stream has started: report in-band
            yield p.sse(error.body())
        yield p.SSE_DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
