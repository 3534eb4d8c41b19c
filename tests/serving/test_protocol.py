"""serving.protocol: the request models on their own (the HTTP answers to bad requests are in test_app)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from serving import protocol as p


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("hello", ["hello"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_a_prompt_field_is_one_or_several_prompts(prompt: Any, prompts: list[Any]) -> None:
    assert p.CompletionRequest(prompt=prompt).prompts == prompts


@pytest.mark.parametrize("prompt", ["", [], [""], [[]], [[1], []], [-1], [1.0], [True], [1, "a"]])
def test_empty_or_mixed_prompts_are_refused(prompt: Any) -> None:
    with pytest.raises(ValidationError):
        p.CompletionRequest(prompt=prompt)


def test_a_message_for_the_chat_template() -> None:
    message = p.ChatMessage.model_validate({
        "role": "assistant", "content": [{"type": "text", "text": "let me "}, {"type": "text", "text": "look"}],
        "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                       {"id": "2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]})
    assert message.for_template() == {"role": "assistant", "content": "let me look", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}},
        {"id": "2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]}


def test_usage_options() -> None:
    base = {"prompt": "x", "stream": True}
    assert not p.CompletionRequest.model_validate(base).include_usage
    both = p.CompletionRequest.model_validate({**base, "stream_options": {"include_usage": True,
                                                                         "continuous_usage_stats": True}})
    assert both.include_usage and both.continuous_usage
    alone = p.CompletionRequest.model_validate({**base, "stream_options": {"continuous_usage_stats": True}})
    assert not alone.continuous_usage  # usage on every chunk is a form of include_usage, as in vLLM


@pytest.mark.parametrize("seed", [p.SEED_MIN - 1, p.SEED_END, 10**100])
def test_seeds_outside_what_a_generator_takes_are_refused(seed: int) -> None:
    with pytest.raises(ValidationError, match="seed"):
        p.CompletionRequest(prompt="x", seed=seed)
