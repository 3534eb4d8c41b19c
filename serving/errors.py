"""One error model for the whole server.

Every failure is a `ServingError`; one handler (`error_response`) turns it into the OpenAI-style body
`{"error": {"message", "type", "param", "code"}}` with its HTTP status. Recoverable, the client's side:
`BadRequest` (400), `Unauthorized` (401), `NotFound` (404), `Overloaded` (429, with Retry-After).
Recoverable, the server's side: `NotReady` (503 while loading or draining), `RequestTimeout` (504).
Fatal: `EngineDead` (500; the engine loop is gone and the process should be restarted).
Once a stream has started, an error goes out as a final `{"error": ...}` chunk followed by `data: [DONE]`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ServingError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ServingError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class Unauthorized(ServingError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class NotFound(ServingError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Overloaded(ServingError):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NotReady(ServingError):
    status = 503
    type = "service_unavailable"
    code = "not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class RequestTimeout(ServingError):
    status = 504
    type = "timeout_error"
    code = "request_timeout"


class EngineDead(ServingError):
    status = 500
    type = "server_error"
    code = "engine_dead"


def error_response(error: ServingError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "function-after", "function-before"}


def _is_type_tag(part: str) -> bool:
    return "[" in part or part in _TYPE_TAGS or part[:1].isupper()


def _param_of(loc: tuple[Any, ...]) -> str | None:
    """("body", "messages", 0, "content") -> "messages[0].content"."""
    # Unions add their member's tag to the location ("prompt", "str"): those are not parameters.
    parts = [p for p in loc[1:] if isinstance(p, int) or not _is_type_tag(str(p))] if loc[:1] == ("body",) \
        else list(loc)
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or None


def validation_error(exc: RequestValidationError) -> BadRequest:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return BadRequest(f"the body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}",
                          code="invalid_json")
    param = _param_of(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"{param}: {message}"
        if "input" in first and first.get("type") != "missing":
            message += f" (got {first['input']!r})"
    return BadRequest(message, param=param)


def install_error_handlers(app: FastAPI) -> None:
    """The one boundary where exceptions become HTTP error responses."""

    async def on_serving_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServingError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error = ServingError(str(exc.detail), code=None)
        error.status = exc.status_code
        error.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(error)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(ServingError("internal server error"))

    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
