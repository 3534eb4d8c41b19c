"""One error model for the whole server.

Every failure is a `ServingError`; one function (`error_response`) turns it into the OpenAI-style body
`{"error": {"message", "type", "param", "code"}}` with its HTTP status and headers; the handlers installed by
`install_error_handlers` route pydantic's validation errors and Starlette's HTTP errors through it, and the
app's edge middleware anything unexpected. Recoverable, the client's side: `BadRequest` (400),
`Unauthorized` (401), `NotFound` (404), `PayloadTooLarge` (413), `Overloaded` (429, with Retry-After: the
server is full) and `RateLimited` (429, with Retry-After: the client's limit per minute).
Recoverable, the server's side: `NotReady` (503 while loading or draining; a draining server also closes the
connection, so that the client's next try reaches another replica), `RequestTimeout` (504, with
`x-should-retry: false`: the same request would time out again), and a plain `ServingError` (500) for one
request that failed inside the engine. Fatal: `EngineDead` (500; the engine loop is gone, and the process
exits so that it is restarted). Once a stream has started, an error goes out as a final `{"error": ...}`
chunk followed by `data: [DONE]`. An error message quotes at most a short piece of the input it refuses.
"""

from __future__ import annotations

import reprlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY


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


class PayloadTooLarge(ServingError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Overloaded(ServingError):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(ServingError):
    """A client over its requests or tokens per minute: OpenAI's shape (type `requests` or `tokens`, code
    `rate_limit_exceeded`) and headers, so that its clients back off as they do from OpenAI."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, kind: str, limit: int, used: int, retry_after: int) -> None:
        unit = "RPM" if kind == "requests" else "TPM"
        super().__init__(f"Rate limit reached on {kind} per min ({unit}): Limit {limit}, Used {used}. "
                         f"Please try again in {retry_after}s.")
        self.type = kind
        self.retry_after = retry_after
        self.limit = limit

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after), f"x-ratelimit-limit-{self.type}": str(self.limit),
                f"x-ratelimit-remaining-{self.type}": "0", f"x-ratelimit-reset-{self.type}": f"{self.retry_after}s"}


class NotReady(ServingError):
    status = 503
    type = "service_unavailable"
    code = "not_ready"

    def headers(self) -> dict[str, str]:
        if self.code == "draining":  # behind a Service, a new connection goes to a replica that is not leaving
            return {"Retry-After": "5", "Connection": "close"}
        return {"Retry-After": "5"}


class RequestTimeout(ServingError):
    status = 504
    type = "timeout_error"
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}  # the openai clients retry a 5xx unless told not to


class EngineDead(ServingError):
    status = 500
    type = "server_error"
    code = "engine_dead"


def error_response(error: ServingError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "function-after", "function-before"}

# How much of a refused value an error message quotes.
_quote = reprlib.Repr()
_quote.maxstring = _quote.maxother = 60
_quote.maxlist = _quote.maxdict = 4
_quote.maxlevel = 2


def quote(value: Any) -> str:
    """A short repr of any value, however large."""
    return _quote.repr(value)


def shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_type_tag(part: str) -> bool:
    return "[" in part or part in _TYPE_TAGS or part[:1].isupper()


def _path(loc: tuple[Any, ...]) -> list[Any]:
    # Unions add their member's tag to the location ("prompt", "str"): those are not parameters.
    return [p for p in loc[1:] if isinstance(p, int) or not _is_type_tag(str(p))] if loc[:1] == ("body",) \
        else list(loc)


def _param_of(loc: tuple[Any, ...]) -> str | None:
    """("body", "messages", 0, "content") -> "messages[0].content"."""
    text = ""
    for p in _path(loc):
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or None


def validation_error(exc: RequestValidationError) -> BadRequest:
    errors = exc.errors()
    if not errors:
        return BadRequest("invalid request")
    for error in errors:
        if error.get("type") == "json_invalid":
            return BadRequest(f"the body is not valid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}",
                              code="invalid_json")
    # Of a union's alternatives, the error deepest in the input names the parameter most precisely.
    first = max(errors, key=lambda e: len(_path(tuple(e.get("loc", ())))))
    param = _param_of(tuple(first.get("loc", ())))
    kind = first.get("type")
    if param is None:
        return BadRequest("the body must be a JSON object of the request's parameters "
                          "(Content-Type: application/json)")
    if kind == "extra_forbidden":
        return BadRequest(f"{param}: unrecognized request argument", param=param, code="unknown_parameter")
    message = f"{param}: {str(first.get('msg', 'invalid value')).removeprefix('Value error, ')}"
    if "input" in first and kind != "missing":
        message += f" (got {quote(first['input'])})"
    return BadRequest(message, param=param)


_HTTP_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def http_error(status: int, detail: str, max_body_size: int | None = None) -> ServingError:
    """Starlette's own HTTP errors (no route, wrong method, unparsable or oversized body) as ServingErrors."""
    if status == 413:
        limit = f" of {max_body_size} bytes" if max_body_size is not None else ""
        return PayloadTooLarge(f"the request body is over this server's limit{limit}")
    if status == 400:
        return BadRequest(f"the body could not be parsed: {detail}", code="invalid_json")
    error = ServingError(detail, code=_HTTP_CODES.get(status, "http_error"))
    error.status = status
    error.type = "invalid_request_error" if status < 500 else "server_error"
    return error


def install_error_handlers(app: FastAPI) -> None:
    """Where FastAPI's and Starlette's exceptions become OpenAI-shaped responses (an unexpected exception is
    answered by the app's edge middleware, with its request id)."""

    async def on_serving_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServingError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(http_error(exc.status_code, str(exc.detail),
                                         request.scope.get(MAX_BODY_SIZE_SCOPE_KEY)))

    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
