"""TorchEngine with the tiny model: exactness across joins and leaves, stops, sampling, penalties, logprobs,
cancellation, and failures that stay with their request."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from serving import engine as engine_module
from serving.engine import (
    Output,
    Request,
    RequestHandle,
    SamplingParams,
    StartupError,
    TorchEngine,
    _TextTracker,
    choose_device,
    encode_chat,
    load_tokenizer,
    prepack_linears,
)
from serving.errors import ServingError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def engine(tiny_model: Path) -> AsyncIterator[TorchEngine]:
    steps: list[int] = []
    engine = TorchEngine(tiny_model, model_name="tiny", max_batch_size=4, threads=1, on_step=steps.append)
    engine.steps = steps  # type: ignore[attr-defined]
    engine.start()
    while not engine.loaded:
        await asyncio.sleep(0.02)
    yield engine
    await engine.stop()


GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)


async def collect(handle: RequestHandle) -> tuple[str, int, str | None]:
    text, tokens, reason = "", 0, None
    async for out in handle:
        text, tokens, reason = text + out.text, tokens + out.new_tokens, out.finish_reason
    return text, tokens, reason


async def test_greedy_output_is_exact_across_joins_shifts_and_trims(engine: TorchEngine) -> None:
    short = engine.encode_prompt("Hello")
    long = engine.encode_prompt("The quick brown fox jumps over the lazy dog. " * 8)
    medium = engine.encode_prompt("Kubernetes schedules pods onto nodes")
    assert len(long) - len(short) > 70  # long enough that its leaving triggers a trim of shared padding
    plans = [(short, 60), (long, 8), (medium, 20), (short, 5)]
    alone = [await collect(engine.submit(ids, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)))
             for ids, n in plans]

    # Now together, arriving while the others run: the long prompt shifts the running row right, its early
    # exit leaves padding that gets trimmed, the later ones join a batch of a different width.
    first = engine.submit(short, SamplingParams(max_tokens=60, temperature=0, ignore_eos=True))
    outputs: list[str] = []
    tokens = 0  # a delta carries several tokens when they piled up while this test was busy
    async for out in first:
        outputs.append(out.text)
        tokens += out.new_tokens
        if len(outputs) == 5:
            break
    tasks = []
    for ids, n in plans[1:]:
        tasks.append(asyncio.ensure_future(collect(engine.submit(ids, SamplingParams(
            max_tokens=n, temperature=0, ignore_eos=True)))))
        await asyncio.sleep(0.01)
    rest = await collect(first)
    together = [("".join(outputs) + rest[0], tokens + rest[1], rest[2]), *await asyncio.gather(*tasks)]
    assert together == alone
    assert max(engine.steps) > 1  # type: ignore[attr-defined]


async def test_greedy_output_is_exact_as_the_buffer_grows_and_a_cancelled_row_makes_room(engine: TorchEngine) -> None:
    """The decode mask is kept from step to step: it must be made again when the buffer grows (the first
    one has 512 columns) and when rows leave and join, also when one leaves as another joins."""
    long_run = (engine.encode_prompt("Hello"), 600)
    joiner = (engine.encode_prompt("Kubernetes schedules pods onto nodes"), 40)
    late = (engine.encode_prompt("The quick brown fox"), 10)

    def params(n: int) -> SamplingParams:
        return SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)

    alone = [await collect(engine.submit(ids, params(n))) for ids, n in (long_run, joiner, late)]

    first = engine.submit(long_run[0], params(long_run[1]))
    text, tokens = "", 0
    async for out in first:
        text, tokens = text + out.text, tokens + out.new_tokens
        if tokens >= 470:  # the joiner's 40 tokens take the batch past the 512 columns
            break
    second = asyncio.ensure_future(collect(engine.submit(*joiner[:1], params(joiner[1]))))
    doomed = engine.submit(engine.encode_prompt("x"), params(1000))
    async for _ in doomed:
        break
    doomed.cancel()
    third = asyncio.ensure_future(collect(engine.submit(late[0], params(late[1]))))  # takes the freed slot
    rest = await collect(first)
    assert [(text + rest[0], tokens + rest[1], rest[2]), await second, await third] == alone
    assert engine._kbufs[0].shape[2] > 512  # the buffer did grow


async def test_top_k_1_equals_greedy_and_seeds_repeat(engine: TorchEngine) -> None:
    ids = engine.encode_prompt("Numbers: 1 2 3")
    greedy = await collect(engine.submit(ids, GREEDY))
    top1 = await collect(engine.submit(ids, SamplingParams(max_tokens=12, temperature=1.5, top_k=1,
                                                           ignore_eos=True, seed=3)))
    assert top1 == greedy
    seeded = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, seed=11, ignore_eos=True)
    assert await collect(engine.submit(ids, seeded)) == await collect(engine.submit(ids, seeded))


async def test_a_stop_string_ends_the_text_before_it(engine: TorchEngine) -> None:
    ids = engine.encode_prompt("Hello, world!")
    text, _, _ = await collect(engine.submit(ids, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)))
    stop = text[10:12]
    assert stop and text.find(stop) >= 1
    stopped = await collect(engine.submit(ids, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True,
                                                              stop=(stop,))))
    assert stopped[0] == text[: text.find(stop)]
    assert stopped[2] == "stop"


async def test_eos_stops_unless_ignored(engine: TorchEngine) -> None:
    ids = engine.encode_prompt("x")
    assert engine.eos_ids
    results = [await collect(engine.submit(ids, SamplingParams(max_tokens=200, temperature=2.0, seed=s)))
               for s in range(12)]
    ended = [r for r in results if r[2] == "stop"]
    assert ended, "some sampled run should meet the end-of-text token within 200 tokens"
    assert all(r[1] < 200 for r in ended)


async def test_cancel_frees_the_slot(engine: TorchEngine) -> None:
    handle = engine.submit(engine.encode_prompt("x"), SamplingParams(max_tokens=20000, temperature=0,
                                                                     ignore_eos=True))
    async for _ in handle:
        break
    assert engine.num_running == 1
    handle.cancel()
    for _ in range(200):
        if engine.num_running == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.num_running == 0 and engine.num_waiting == 0


def test_prepacked_linears_give_the_same_greedy_tokens(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    packed = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    linears = sum(type(m) is torch.nn.Linear for m in plain.modules())
    with torch.inference_mode():
        assert prepack_linears(packed, batch_size=4) == linears > 0
        assert not any(type(m) is torch.nn.Linear for m in packed.modules())
        ids = torch.tensor([[5, 17, 42, 99, 7, 3], [8, 8, 120, 64, 2, 300]])
        expected, got = plain(input_ids=ids).logits, packed(input_ids=ids).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)  # another summation order, same fp32
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_the_chat_template_gets_developer_as_system_and_refuses_tool_calls_it_cannot_show(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)  # ChatML, which knows neither role nor tool calls
    user = {"role": "user", "content": "Hi"}
    assert encode_chat(tokenizer, [{"role": "developer", "content": "Be brief"}, user]) == \
        encode_chat(tokenizer, [{"role": "system", "content": "Be brief"}, user])
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": {}}}
    with pytest.raises(ValueError, match="does not show tool calls to the model"):
        encode_chat(tokenizer, [user, {"role": "assistant", "content": "", "tool_calls": [call]}, user])


class CharTokenizer:
    """ids are code points; 0xFFFD stands for half a character."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)


def test_text_tracker_holds_back_a_possible_stop_string() -> None:
    tracker = _TextTracker(CharTokenizer(), stop=("END",))
    ids: list[int] = []
    sent = []
    for ch in "abcEN":
        ids.append(ord(ch))
        sent.append(tracker.update(ids, final=False))
    assert "".join(d for d, _ in sent) == "abc"  # "EN" may still become "END"
    ids.append(ord("D"))
    assert tracker.update(ids, final=False) == ("", True)


def test_text_tracker_flushes_at_the_end_and_waits_for_whole_characters() -> None:
    tracker = _TextTracker(CharTokenizer(), stop=())
    assert tracker.update([ord("a"), 0xFFFD], final=False) == ("", False)
    assert tracker.update([ord("a"), 0xFFFD, ord("b")], final=True) == ("a\ufffdb", False)


def test_text_tracker_streams_a_fast_tokenizer_one_token_at_a_time(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = "Héllo, wörld! 你好 🚀 <|im_end|> fox"  # characters of several bytes, each byte its own token
    ids = tokenizer.encode(text, add_special_tokens=False)
    tracker = _TextTracker(tokenizer, stop=())
    assert tracker._stream is not None  # the tokenizers library's DecodeStream, not the window fallback
    deltas = [tracker.update(ids[: i + 1], final=i == len(ids) - 1)[0] for i in range(len(ids))]
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True) == "Héllo, wörld! 你好 🚀  fox"
    assert all("\ufffd" not in d for d in deltas)  # never half a character


def test_text_tracker_falls_back_to_windows_when_the_stream_refuses_the_bytes() -> None:
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    # A Llama-style byte-fallback tokenizer: random ids make byte sequences that are not UTF-8, and for some
    # of them DecodeStream raises "Invalid prefix encountered" instead of returning text.
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}, "▁": 259}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>")
    ids = [4, 145, 259, 4]  # 0x01, 0x8E (a stray continuation byte), a space, 0x01

    def run(stream: bool) -> tuple[str, _TextTracker]:
        tracker = _TextTracker(tokenizer, stop=())
        if not stream:
            tracker._stream = None
        text = "".join(tracker.update(ids[: i + 1], final=i == len(ids) - 1)[0] for i in range(len(ids)))
        return text, tracker

    text, tracker = run(stream=True)
    assert tracker._stream is None  # it fell back, rather than failing the request (and the engine loop)
    assert text == run(stream=False)[0] == "\x01\ufffd \x01"


async def outputs(handle: RequestHandle) -> list[Output]:
    return [out async for out in handle]


async def test_a_failure_inside_one_request_fails_it_alone(engine: TorchEngine,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Its sampling raises: that request gets a 500 of its own, its batch neighbour goes on, the loop lives."""
    real = engine_module._sample

    def sample(logits: Any, params: SamplingParams, generator: Any) -> int:
        if params.seed == 666:
            raise RuntimeError("this row's sampling broke")
        return real(logits, params, generator)

    monkeypatch.setattr(engine_module, "_sample", sample)
    ids = engine.encode_prompt("Hello")
    bystander = asyncio.ensure_future(collect(engine.submit(ids, SamplingParams(max_tokens=40, temperature=0,
                                                                                  ignore_eos=True))))
    victim = engine.submit(ids, SamplingParams(max_tokens=40, temperature=1.0, seed=666, ignore_eos=True))
    with pytest.raises(ServingError) as failure:
        await collect(victim)
    assert (failure.value.status, failure.value.code) == (500, "internal_error")
    assert "RuntimeError" in failure.value.message
    assert (await bystander)[1:] == (40, "length")
    assert not engine.dead
    assert (await collect(engine.submit(ids, GREEDY)))[1:] == (12, "length")


async def test_a_prompt_the_model_cannot_take_fails_alone(engine: TorchEngine) -> None:
    """A token id past the embedding fails the prefill it is in; the others of that prefill are run again
    without it and finish."""
    good = engine.encode_prompt("Hello")
    alone = await collect(engine.submit(good, GREEDY))
    handles = [engine.submit(good, GREEDY), engine.submit([engine.vocab_size + 5], GREEDY),
               engine.submit(good, GREEDY)]
    results = await asyncio.gather(*(collect(h) for h in handles), return_exceptions=True)
    assert isinstance(results[1], ServingError) and results[1].status == 500
    assert results[0] == results[2] == alone
    assert not engine.dead


@pytest.mark.parametrize("seed", [0, -1, -(2**63), 2**64 - 1])
async def test_every_seed_the_api_accepts_samples(engine: TorchEngine, seed: int) -> None:
    params = SamplingParams(max_tokens=6, temperature=1.0, seed=seed, ignore_eos=True)
    first = await collect(engine.submit(engine.encode_prompt("Hello"), params))
    assert first[1:] == (6, "length")
    assert await collect(engine.submit(engine.encode_prompt("Hello"), params)) == first


async def test_penalties_and_biases_adjust_the_pick(engine: TorchEngine) -> None:
    import torch

    logits = torch.zeros(engine.vocab_size)
    logits[10], logits[11], logits[12] = 3.0, 2.5, 1.0

    def picks(count: int, **adjust: Any) -> list[int]:
        seq = engine._new_seq(Request([1], SamplingParams(max_tokens=count, temperature=0, **adjust)))
        return [engine._pick(seq, logits) for _ in range(count)]

    assert picks(3) == [10, 10, 10]
    assert picks(2, logit_bias=((12, 5.0),)) == [12, 12]
    assert picks(2, logit_bias=((10, -100.0), (11, -100.0))) == [12, 12]
    # 3.0 - 0.3 x (times 10 was generated) against 2.5 - 0.3 x (times 11 was): OpenAI's frequency penalty
    assert picks(5, frequency_penalty=0.3) == [10, 10, 11, 10, 11]
    # once generated, each loses 1.0 for good: OpenAI's presence penalty
    assert picks(4, presence_penalty=1.0) == [10, 11, 10, 10]
    assert logits[10] == 3.0  # the batch's logits are left as they were


async def test_logprobs_are_the_models_own_and_cost_nothing_when_not_asked(engine: TorchEngine,
                                                                            tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    ids = engine.encode_prompt("Hello, world")
    plain = await outputs(engine.submit(ids, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)))
    assert all(o.logprobs is None and o.prompt_logprobs is None for o in plain)

    asked = await outputs(engine.submit(ids, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True,
                                                            logprobs=3, prompt_logprobs=2)))
    entries = [entry for o in asked for entry in o.logprobs or ()]
    assert len(entries) == 5
    for token, logprob, top in entries:
        assert len(top) == 3 and top[0][0] == token and top[0][1] == logprob  # greedy: the best one
        assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    scored = asked[0].prompt_logprobs
    assert scored is not None and len(scored) == len(ids) and scored[0] is None
    assert [entry[0] for entry in scored[1:] if entry is not None] == ids[1:]

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    assert entries[0][1] == pytest.approx(float(expected[-1, entries[0][0]]), abs=1e-3)
    assert [entry[1] for entry in scored[1:] if entry is not None] == pytest.approx(
        [float(expected[j, ids[j + 1]]) for j in range(len(ids) - 1)], abs=1e-3)


def test_a_loaded_tokenizer_is_settled_so_that_threads_only_read_it(tiny_model: Path, tmp_path: Path) -> None:
    """transformers turns off a truncation or padding the tokenizer's file sets on the first encode; done in
    load_tokenizer, no later encode (on the event loop and the tokenizer thread at once) changes it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.backend_tokenizer.enable_truncation(max_length=8)
    tokenizer.backend_tokenizer.enable_padding(length=16)
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).backend_tokenizer.truncation is not None
    settled = load_tokenizer(tmp_path)
    assert settled.backend_tokenizer.truncation is None and settled.backend_tokenizer.padding is None


def test_no_cuda_when_cuda_is_required_is_a_startup_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert choose_device() == ("cpu", torch.float32)
    with pytest.raises(StartupError, match=r"SERVESTACK_REQUIRE_CUDA is set but CUDA is not usable: .*torch 2"):
        choose_device(require_cuda=True)


def test_loading_freezes_the_heap_out_of_the_collectors_sight(tiny_model: Path) -> None:
    gc.unfreeze()
    engine = TorchEngine(tiny_model, model_name="tiny", max_batch_size=1, threads=1)
    engine.load()
    # torch, transformers, the model and the tokenizer: a full collection no longer walks them
    assert gc.get_freeze_count() > 10_000
