"""TorchEngine with the tiny model: exactness across joins and leaves, stops, sampling, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from serving.engine import RequestHandle, SamplingParams, TorchEngine, _TextTracker, prepack_linears

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
    async for out in first:
        outputs.append(out.text)
        if len(outputs) == 5:
            break
    tasks = []
    for ids, n in plans[1:]:
        tasks.append(asyncio.ensure_future(collect(engine.submit(ids, SamplingParams(
            max_tokens=n, temperature=0, ignore_eos=True)))))
        await asyncio.sleep(0.01)
    rest = await collect(first)
    together = [("".join(outputs) + rest[0], 5 + rest[1], rest[2]), *await asyncio.gather(*tasks)]
    assert together == alone
    assert max(engine.steps) > 1  # type: ignore[attr-defined]


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
