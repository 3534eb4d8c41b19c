"""The HTTP layer: `build_app(settings, engine)`.

Routes only parse, call and shape: the checks and preparation of a request live in serving.context, its
generation and its OpenAI body or stream in serving.generation; they never touch torch. `Edge`, the one
middleware, does what every exchange needs before routing, the client's key and limits included. The
lifespan starts the engine (loading happens in the background: until it is done, readiness and the /v1
routes answer 503) and stops it.

Probes: `/health/live` fails when the engine loop has died or has not stepped for SERVESTACK_STALL_SECONDS;
`/health/ready` (and `/health`, as vLLM serves it) also while the model loads and while draining.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import protocol as p
from serving.context import COMPLETIONS_DEFAULT_MAX_TOKENS, ServingContext
from serving.engine import Engine
from serving.errors import PayloadTooLarge, ServingError, Unauthorized, error_response, install_error_handlers
from serving.generation import ChatShape, CompletionShape, Generation, respond
from serving.keys import Client
from serving.settings import Settings

log = logging.getLogger("serving.app")

_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")  # visible ASCII, as ids are in logs and headers


class Edge:
    """Every HTTP exchange, before routing: its request id (the client's `x-request-id`, or a new one) on the
    response; for /v1 routes, the API key (checked before the body is read, so that a stranger's body is
    never parsed; the client it belongs to goes into the request's state), the body size (a declared length
    over SERVESTACK_MAX_BODY_BYTES is refused here with 413; a body sent without a length goes through
    Starlette's limiter, which counts it as it is read), the client's requests per minute and tokens per
    minute (429 with Retry-After), and the count of requests in flight that the drain waits for; the answer
    counted by route, method and status; and an unexpected exception answered as a 500 in the OpenAI shape,
    logged with the request id."""

    def __init__(self, app: ASGIApp, ctx: ServingContext) -> None:
        self.app = app
        self.ctx = ctx
        self.counted = RequestBodyLimitMiddleware(app, max_body_size=ctx.settings.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex.encode()
        status = 0
        state = scope.setdefault("state", {})  # the request's state: its client, and its generation once made

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            if not scope["path"].startswith("/v1/"):
                await self.app(scope, receive, answer)
                return
            headers = dict(scope["headers"])
            try:
                await self._admit(headers, state)
            except ServingError as refusal:
                await error_response(refusal)(scope, receive, answer)
                return
            with self.ctx.lifecycle.track():
                await (self.app if b"content-length" in headers else self.counted)(scope, receive, answer)
        except Exception:
            log.exception("unexpected error answering %s %s (request id %s)", scope["method"], scope["path"],
                          request_id.decode())
            if status:
                raise
            await error_response(ServingError("internal server error"))(scope, receive, answer)
        finally:
            route = getattr(scope.get("route"), "path", None)
            self.ctx.metrics.http(route or "none", scope["method"], status or 500)
            fault = status >= 500 and status != 503  # 503s (loading, draining, probes) are the lifecycle
            if scope["path"].startswith("/v1/"):
                fields = {"request_id": request_id.decode(), "route": route or scope["path"],
                          "method": scope["method"], "status": status or 500,
                          "latency_seconds": round(time.monotonic() - started, 6), **self._outcome(state)}
                log.log(logging.WARNING if fault else logging.INFO, "%s %s %d", scope["method"], scope["path"],
                        status or 500, extra={"fields": fields})
            elif fault:
                log.warning("%s %s answered %d (request id %s)", scope["method"], scope["path"], status,
                            request_id.decode())

    def _outcome(self, state: dict[str, Any]) -> dict[str, Any]:
        """What a request's log line says of its client and of its generation (null where there was none)."""
        client: Client | None = state.get("client")
        gen: Generation | None = state.get("generation")
        fields: dict[str, Any] = {"client": client.id if client else None, "prompt_tokens": None,
                                  "completion_tokens": None, "ttft_seconds": None, "finish_reason": None}
        if gen is not None:
            usage = gen.usage()
            firsts = [choice.first_at for choice in gen.choices if choice.first_at is not None]
            reasons = [choice.finish_reason or gen.ended_as for choice in gen.choices]
            fields.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                          ttft_seconds=round(min(firsts) - gen.arrived, 6) if firsts else None,
                          finish_reason=",".join(dict.fromkeys(reasons)))  # one per kind, in choice order
        if self.ctx.settings.log_prompts and "prompt" in state:
            fields["prompt"] = state["prompt"]
        return fields

    async def _admit(self, headers: dict[bytes, bytes], state: dict[str, Any]) -> None:
        """Put the client the request's key belongs to (None where no key is required) into the request's
        state, or raise the refusal."""
        ctx = self.ctx
        client = None
        if ctx.keys.required:
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            text = given.strip().decode("latin-1")
            client = ctx.keys.identify(text) if scheme.lower() == b"bearer" and text else None
            if client is None:
                ctx.metrics.rejected("unauthorized")
                raise Unauthorized("missing or invalid API key (send Authorization: Bearer <key>)")
        state["client"] = client
        limit = ctx.settings.max_body_bytes
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            ctx.metrics.rejected("too_large")
            raise PayloadTooLarge(f"the request body has {int(length)} bytes; this server takes at most {limit}")
        if client is not None:
            await ctx.hold_to_limits(client)


def build_app(settings: Settings, engine: Engine) -> FastAPI:
    ctx = ServingContext(settings, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await engine.stop()
            await ctx.aclose()

    app = FastAPI(title="servestack", lifespan=lifespan)
    app.state.ctx = ctx
    app.state.lifecycle = ctx.lifecycle
    app.add_middleware(Edge, ctx=ctx)
    install_error_handlers(app)

    def status(ok: bool, why: str) -> JSONResponse:
        return JSONResponse({"status": why}, status_code=200 if ok else 503)

    @app.get("/health/live")
    async def live() -> JSONResponse:
        return status(*ctx.alive())

    @app.get("/health/ready")
    @app.get("/health")
    async def ready() -> JSONResponse:
        return status(*ctx.ready())

    if settings.metrics_port is None:  # otherwise served on their own port (python -m serving)
        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    v1 = APIRouter(prefix="/v1")

    def remember(request: Request, gen: Generation, prompt: Any) -> None:
        """What the edge's log line reports of the request: its generation, and its prompt if prompts are logged."""
        request.state.generation = gen
        if settings.log_prompts:
            request.state.prompt = prompt

    def card() -> p.ModelCard:
        return p.ModelCard(id=ctx.model_name, created=p.now(), max_model_len=engine.max_model_len)

    @v1.get("/models")
    async def models() -> p.ModelList:
        ctx.refuse_unless_serving()
        return p.ModelList(data=[card()])

    @v1.get("/models/{model:path}")
    async def model(model: str) -> p.ModelCard:
        ctx.check_model(model)
        ctx.refuse_unless_serving()
        return card()

    @v1.post("/completions", response_model=None)
    async def completions(req: p.CompletionRequest, request: Request) -> Response:
        arrived = time.monotonic()
        ctx.check_model(req.model)
        n = req.n or 1
        ctx.check_choices(len(req.prompts), n)
        with ctx.admit(len(req.prompts) * n):
            params = ctx.sampling(req, max_tokens=req.max_tokens, max_tokens_param="max_tokens",
                                  default_max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS, logprobs=req.logprobs,
                                  prompt_logprobs=req.logprobs if req.echo else None)
            prompts = await ctx.completion_prompts(req)
            gen = Generation(ctx, prompts, n, lambda prompt, i: ctx.for_choice(params, prompt, i), arrived,
                             client=request.state.client)
        remember(request, gen, req.prompt)
        return await respond(gen, CompletionShape(ctx, gen, req), request, req)

    @v1.post("/chat/completions", response_model=None)
    async def chat(req: p.ChatCompletionRequest, request: Request) -> Response:
        arrived = time.monotonic()
        ctx.check_model(req.model)
        n = req.n or 1
        ctx.check_choices(1, n)
        max_tokens: int | None = req.max_tokens
        param = "max_tokens"
        if req.max_completion_tokens is not None:
            max_tokens, param = req.max_completion_tokens, "max_completion_tokens"
        with ctx.admit(n):
            params = ctx.sampling(req, max_tokens=max_tokens, max_tokens_param=param,
                                  default_max_tokens=settings.max_tokens,
                                  logprobs=(req.top_logprobs or 0) if req.logprobs else None, prompt_logprobs=None)
            prompt = await ctx.chat_prompt(req)
            gen = Generation(ctx, [prompt], n, lambda prompt, i: ctx.for_choice(params, prompt, i), arrived,
                             client=request.state.client)
        remember(request, gen, [message.model_dump(exclude_none=True) for message in req.messages]
                 if settings.log_prompts else None)
        return await respond(gen, ChatShape(ctx, gen, req), request, req)

    app.include_router(v1)
    return app
