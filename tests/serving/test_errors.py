"""serving.errors: messages that name the parameter and quote little of the input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from serving.errors import NotReady, RequestTimeout, http_error, quote, shorten, validation_error


def test_quotes_stay_short_however_large_the_input() -> None:
    assert len(quote("x" * 10_000_000)) < 80
    assert len(quote([list(range(1000))] * 1000)) < 100
    assert len(quote({str(i): i for i in range(1000)})) < 80
    assert shorten("y" * 1000, limit=10) == "yyyyyyyyyy... (1000 characters)"


def error(**item: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "msg": "bad", **item}])


def test_a_validation_error_names_the_deepest_parameter() -> None:
    exc = RequestValidationError([
        {"type": "string_type", "loc": ("body", "messages", 0, "content", "str"),
         "msg": "Input should be a valid string", "input": [{"type": "image_url"}]},
        {"type": "value_error", "loc": ("body", "messages", 0, "content", "list[ContentPart]", 0, "type"),
         "msg": "Value error, only text content parts are supported", "input": "image_url"},
    ])
    bad = validation_error(exc)
    assert bad.param == "messages[0].content[0].type"
    assert bad.message == "messages[0].content[0].type: only text content parts are supported (got 'image_url')"


def test_a_validation_error_without_a_parameter_is_about_the_body() -> None:
    bad = validation_error(error(loc=("body",), input=[1]))
    assert bad.param is None and bad.message.startswith("the body must be a JSON object")


@pytest.mark.parametrize(("status", "code", "kind"), [
    (400, "invalid_json", "invalid_request_error"),
    (404, "not_found", "invalid_request_error"),
    (405, "method_not_allowed", "invalid_request_error"),
    (413, "request_too_large", "invalid_request_error"),
    (418, "http_error", "invalid_request_error"),
    (502, "http_error", "server_error"),
])
def test_starlettes_http_errors_get_a_code(status: int, code: str, kind: str) -> None:
    error = http_error(status, "detail", max_body_size=10)
    assert (error.status, error.code, error.type) == (status, code, kind)


def test_headers_that_steer_clients() -> None:
    assert RequestTimeout("slow").headers() == {"x-should-retry": "false"}
    assert NotReady("bye", code="draining").headers() == {"Retry-After": "5", "Connection": "close"}
    assert NotReady("wait", code="loading").headers() == {"Retry-After": "5"}
