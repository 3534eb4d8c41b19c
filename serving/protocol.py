"""The OpenAI wire format: request and response models (pydantic only; no torch here).

Requests are validated here, strictly: a string is not a number, `true` is not 1, and a bad field comes
back as 400 naming the parameter. Every optional field takes an explicit `null`, which means its default.
Text must be valid Unicode (no lone surrogates).

What this server does not do is refused, never ignored: a parameter the OpenAI API defines for something
not implemented here (`tools`, `response_format` other than text, `suffix`, `best_of`, image or audio
content, ...) answers 400 naming it, unless it carries its neutral value (`tools: []`,
`tool_choice: "none"`, `response_format: {"type": "text"}`, ...), and so does any parameter the API does not
define, as OpenAI's own server does. Hints that change nothing in the output (`user`, `metadata`,
`service_tier`, `store: false`, the prompt-caching fields) are accepted and have no effect. vLLM's
`top_k` and `ignore_eos` are accepted too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

SEED_MIN, SEED_END = -(2**63), 2**64  # what a torch generator takes


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"text must be valid Unicode; character {error.start} is a lone surrogate "
                         f"({value[error.start]!r})") from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]
TokenId = Annotated[int, Field(ge=0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(_Wire):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None  # vLLM: every chunk carries the usage so far
    include_obfuscation: bool | None = None  # a side-channel padding hint; no effect here


def _never(value: Any) -> bool:
    return False


# Parameters of the OpenAI API that this server does not implement: what each asks for, and whether a value
# is neutral (asks for nothing, so it is accepted). `null` is always neutral.
_NOT_IMPLEMENTED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "tools": ("tool calling", lambda v: v == []),
    "tool_choice": ("tool calling", lambda v: v == "none"),
    "functions": ("function calling", lambda v: v == []),
    "function_call": ("function calling", lambda v: v == "none"),
    "response_format": ('a response format other than {"type": "text"}', lambda v: v == {"type": "text"}),
    "audio": ("audio output", _never),
    "modalities": ("output other than text", lambda v: v == ["text"]),
    "prediction": ("predicted outputs", _never),
    "web_search_options": ("web search", _never),
    "moderation": ("moderation", _never),
    "reasoning_effort": ("reasoning effort", _never),
    "verbosity": ("verbosity", _never),
    "store": ("storing completions", lambda v: v is False),
    "suffix": ("a suffix (text insertion)", lambda v: v == ""),
    "best_of": ("best_of other than 1", lambda v: v == 1),
}


def _refuse_unless_neutral(value: Any, info: ValidationInfo) -> Any:
    name = info.field_name or "?"
    what, neutral = _NOT_IMPLEMENTED[name]
    if value is not None and not neutral(value):
        raise ValueError(f"{what} is not supported by this server")
    return None


class _Request(_Wire):
    """The fields both endpoints share."""

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    seed: Annotated[int, Field(ge=SEED_MIN, lt=SEED_END)] | None = None
    stop: Text | list[Text] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None  # after `stream`: its validator reads it
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    # vLLM's extensions
    top_k: Annotated[int, Field(ge=-1)] | None = None
    ignore_eos: bool | None = None
    # hints with no effect on the output
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    # defined by OpenAI, not implemented here (see _NOT_IMPLEMENTED)
    store: Any = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed with stream: true")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_id_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isascii() or not key.isdigit():
                raise ValueError(f"keys must be token ids (got {key[:40]!r})")
        return value

    @field_validator("store", mode="before")
    @classmethod
    def _store_not_implemented(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_unless_neutral(value, info)

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        return self.include_usage and bool(self.stream_options and self.stream_options.continuous_usage_stats)


Prompt = str | list[int]  # one prompt: text or token ids


class CompletionRequest(_Request):
    prompt: Text | list[Text] | list[TokenId] | list[list[TokenId]]
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    suffix: Any = None
    best_of: Any = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: str | list[Any]) -> str | list[Any]:
        if value == "" or value == [] or (isinstance(value, list) and any(p == "" or p == [] for p in value)):
            raise ValueError("prompt must not be empty")
        return value

    @field_validator("suffix", "best_of", mode="before")
    @classmethod
    def _completion_not_implemented(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_unless_neutral(value, info)

    @property
    def prompts(self) -> list[Prompt]:
        """The prompts of this request (a list of strings or of id lists is several)."""
        value = self.prompt
        if isinstance(value, str):
            return [value]
        if all(isinstance(item, int) for item in value):
            return [value]  # type: ignore[list-item]  # checked: one prompt of token ids
        return list(value)  # type: ignore[arg-type]  # checked: several prompts


class ContentPart(_Wire):
    model_config = ConfigDict(strict=True, extra="ignore")  # a part's other fields (e.g. cache hints) are moot

    type: str
    text: Text | None = None
    prompt_cache_breakpoint: dict[str, Any] | None = None  # a caching hint; no effect here

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value != "text":
            raise ValueError(f"only text content parts are supported (got type {value[:40]!r})")
        return value


class FunctionCall(_Wire):
    name: Text
    arguments: Text


class ToolCall(_Wire):
    id: Text
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None
    name: Text | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant turn that called tools
    tool_call_id: Text | None = None  # a tool's answer
    refusal: Text | None = None  # an assistant turn's refusal, as OpenAI returns it (not shown to the model)
    function_call: Any = None
    audio: Any = None

    @field_validator("function_call", "audio", mode="before")
    @classmethod
    def _message_not_implemented(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            raise ValueError("function calls and audio in messages are not supported by this server")
        return None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)

    @property
    def template_size(self) -> int:
        """How many characters a chat template gets from this message, with some for the template's own text
        around it: what tokenizing it may cost."""
        calls = sum(len(c.id) + len(c.function.name) + len(c.function.arguments) for c in self.tool_calls or ())
        return 32 + len(self.text) + len(self.name or "") + len(self.tool_call_id or "") + calls

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates take it (tool-call arguments as objects, as Hugging Face's are)."""
        message: dict[str, Any] = {"role": self.role, "content": self.text}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": call.type,
                 "function": {"name": call.function.name, "arguments": _arguments(call.function.arguments)}}
                for call in self.tool_calls
            ]
        return message


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class ChatCompletionRequest(_Request):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None  # after `logprobs`: its validator reads it
    parallel_tool_calls: bool | None = None  # no tools, so nothing to parallelise: no effect
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None
    moderation: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None

    @field_validator("messages")
    @classmethod
    def _some_text(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.text for m in value):
            raise ValueError("messages must contain some text")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @field_validator("tools", "tool_choice", "functions", "function_call", "response_format", "audio",
                     "modalities", "prediction", "web_search_options", "moderation", "reasoning_effort",
                     "verbosity", mode="before")
    @classmethod
    def _chat_not_implemented(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_unless_neutral(value, info)


# --- responses ---------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class CompletionLogprobs(BaseModel):
    """The legacy completions format: one entry per token, of the prompt too when echoed."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "servestack"
    max_model_len: int | None = None  # vLLM's extension


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def sse(payload: BaseModel | dict[str, Any]) -> str:
    """One server-sent event carrying a JSON payload."""
    body = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload, separators=(",", ":"))
    return f"data: {body}\n\n"


SSE_DONE = "data: [DONE]\n\n"
