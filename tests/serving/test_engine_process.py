"""EngineProcess: the engine loop in its own process, with the tiny model. Its ordinary behaviour (batching,
cancel on disconnect, drain, metrics) is covered end to end by test_server, which runs `python -m serving`;
here are the process boundaries: what crosses the wire, and what happens when either side dies."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from serving.engine import SamplingParams, TorchEngine
from serving.engine_process import EngineProcess
from serving.errors import EngineDead, ServingError
from tests.serving.conftest import ServerProcess
from tests.serving.test_engine import collect

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def started(engine: EngineProcess | TorchEngine) -> None:
    engine.start()
    deadline = time.monotonic() + 60
    while not engine.loaded:
        assert not engine.dead and time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def until(condition: Callable[[], bool], message: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.01)


@pytest.fixture
async def engine(tiny_model: Path) -> AsyncIterator[EngineProcess]:
    steps: list[int] = []
    engine = EngineProcess(tiny_model, model_name="tiny", max_batch_size=4, threads=1, on_step=steps.append)
    engine.steps = steps  # type: ignore[attr-defined]
    await started(engine)
    yield engine
    await engine.stop()


async def test_outputs_and_status_cross_the_process_boundary_unchanged(
    engine: EngineProcess, tiny_model: Path
) -> None:
    assert engine.load_seconds is not None and engine.load_seconds > 0
    assert engine.max_model_len == 32768
    prompts = [engine.encode_prompt(text) for text in ("Hello", "The quick brown fox", "Kubernetes schedules")]
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    remote = await asyncio.gather(*[collect(engine.submit(ids, params)) for ids in prompts])

    local_engine = TorchEngine(tiny_model, model_name="tiny", max_batch_size=4, threads=1)
    await started(local_engine)
    try:
        local = [await collect(local_engine.submit(ids, params)) for ids in prompts]
    finally:
        await local_engine.stop()
    assert remote == local
    assert all(reason == "length" and tokens == 20 for _, tokens, reason in remote)
    assert max(engine.steps) == 3  # type: ignore[attr-defined]  # batch sizes come back with the deltas
    await until(lambda: engine.num_running == engine.num_waiting == 0, "requests left behind")


async def test_logprobs_kv_usage_and_one_requests_failure_cross_the_wire(engine: EngineProcess) -> None:
    ids = engine.encode_prompt("Hello")
    params = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True, logprobs=2, prompt_logprobs=1)
    outs = [out async for out in engine.submit(ids, params)]
    assert [len(entry[2]) for out in outs for entry in out.logprobs or ()] == [2, 2, 2, 2]
    scored = outs[0].prompt_logprobs
    assert scored is not None and len(scored) == len(ids) and scored[0] is None

    long = engine.submit(ids, SamplingParams(max_tokens=30000, ignore_eos=True))
    async for _ in long:
        break
    await until(lambda: engine.kv_cache_usage > 0, "the KV usage never showed")
    with pytest.raises(ServingError) as failure:
        async for _ in engine.submit([engine.vocab_size + 1], SamplingParams(max_tokens=4)):
            pass
    assert (failure.value.status, failure.value.code) == (500, "internal_error")
    assert not engine.dead
    long.cancel()
    await until(lambda: engine.num_running == 0 and engine.kv_cache_usage == 0, "the long request stayed")


async def test_the_app_side_freezes_its_heap_once_its_tokenizer_is_loaded(tiny_model: Path) -> None:
    gc.unfreeze()
    engine = EngineProcess(tiny_model, model_name="tiny", max_batch_size=1, threads=1)
    await started(engine)
    try:
        assert gc.get_freeze_count() > 10_000  # see serving.engine.freeze_heap
    finally:
        await engine.stop()


async def test_a_cancel_reaches_the_engine_process_and_frees_the_slot(engine: EngineProcess) -> None:
    handle = engine.submit(engine.encode_prompt("Hello"), SamplingParams(max_tokens=30000, ignore_eos=True))
    async for _ in handle:
        break
    await until(lambda: engine.num_running == 1, "the request never showed as running")  # status: once a step
    handle.cancel()
    await until(lambda: engine.num_running == engine.num_waiting == 0, "the slot was not freed")


async def test_when_the_engine_process_dies_requests_fail_and_the_engine_reports_dead(
    engine: EngineProcess,
) -> None:
    handle = engine.submit(engine.encode_prompt("Hello"), SamplingParams(max_tokens=30000, ignore_eos=True))
    async for _ in handle:
        break
    os.kill(engine._process.pid, signal.SIGKILL)
    with pytest.raises(EngineDead, match="stopped before finishing"):
        async for _ in handle:
            pass
    assert engine.dead
    with pytest.raises(EngineDead):
        engine.submit([1, 2, 3], SamplingParams(max_tokens=1))


async def test_stop_ends_the_engine_process_and_fails_what_is_still_running(tiny_model: Path) -> None:
    engine = EngineProcess(tiny_model, model_name="tiny", max_batch_size=2, threads=1)
    await started(engine)
    handle = engine.submit(engine.encode_prompt("Hello"), SamplingParams(max_tokens=30000, ignore_eos=True))
    async for _ in handle:
        break
    await engine.stop()
    assert engine._process.exitcode == 0
    assert not engine.dead  # stopped on purpose: not a failure
    with pytest.raises(EngineDead):
        async for _ in handle:
            pass


def test_the_engine_process_exits_when_the_server_is_killed(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(SERVESTACK_MAX_BATCH_SIZE="2")
    children = psutil.Process(server.process.pid).children()
    engines = [c for c in children if "multiprocessing.spawn" in " ".join(c.cmdline())]
    assert len(engines) == 1
    server.process.kill()  # SIGKILL: no drain, no stop message; only the pipe closing tells the engine
    server.process.wait(timeout=10)
    gone, alive = psutil.wait_procs(engines, timeout=20)
    assert gone and not alive



async def test_a_model_that_fails_to_load_ends_the_engine_process(tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")  # the tokenizer loads; the model cannot
    engine = EngineProcess(broken, model_name="broken", threads=1)
    engine.start()
    await until(lambda: engine.dead, "the engine never reported the failed load")
    await asyncio.to_thread(engine._process.join, 30)  # it ends by itself: nobody has to stop it
    assert engine._process.exitcode == 0
    assert not engine.loaded
    with pytest.raises(EngineDead):
        engine.submit([1, 2], SamplingParams(max_tokens=1))


def test_a_program_that_never_calls_stop_still_exits(tiny_model: Path) -> None:
    program = f"""
import asyncio
from serving.engine_process import EngineProcess

async def main():
    engine = EngineProcess({str(tiny_model)!r}, model_name="tiny", threads=1)
    engine.start()
    while not engine.loaded:
        await asyncio.sleep(0.05)

asyncio.run(main())
print("returned")
"""
    # Without a way to tell the engine process, the interpreter's exit would wait on it for ever.
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=90)
    assert (done.returncode, done.stdout.strip()) == (0, "returned"), done.stderr
