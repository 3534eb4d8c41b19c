"""Side-by-side benchmark: the naive server, our server over HTTP, and our engine alone.

    python -m serving.sidebyside --model smollm2 [--concurrency 16] [--requests 32] \\
        [--input-len 64] [--output-len 128] [--json sidebyside.json]

On one model and one workload, one after the other on the same machine:
  (a) baseline: a FastAPI handler that calls `model.generate` once per request behind a lock (streamed);
  (b) server:   `python -m serving` with the same model, over HTTP;
  (c) engine:   our engine alone, in its own process as the server runs it (serving.engine_process), no
                HTTP, at the same concurrency and batch size;
  (d) optional (--with-transformers-cb): transformers' generate_batch on the same prompts, offline.
(a) and (b) are driven by serving.bench's load generator (streamed completions, greedy, ignore_eos), (c)
by the same prompts submitted straight to the engine. Then it prints the figures and the ratios against
the goals: server throughput >= 8x baseline; server >= 85% of the engine alone; server p99 TTFT below the
baseline's median TTFT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from serving.bench import build_prompt, run_load
from serving.models import BUILDERS

GOAL_SPEEDUP = 8.0
GOAL_HTTP_SHARE = 0.85


# --- (a) the baseline server ------------------------------------------------------------------------


def baseline_app(model_path: Path, model_name: str) -> FastAPI:
    """One `model.generate` per request, one request at a time; tokens streamed as they come."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    from serving.engine import choose_device

    device, dtype = choose_device()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    model.to(device)  # type: ignore[arg-type]  # transformers' stubs expect a dtype-or-device union
    model.eval()
    lock = asyncio.Lock()
    app = FastAPI()

    class QueueStreamer(BaseStreamer):
        """generate() calls put() with the prompt first, then each new token; end() when done."""

        def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[int | None]) -> None:
            self.loop, self.queue, self.prompt_seen = loop, queue, False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            for token in value.reshape(-1).tolist():
                self.loop.call_soon_threadsafe(self.queue.put_nowait, int(token))

        def end(self) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.post("/v1/completions")
    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        ids = tokenizer(body["prompt"], return_tensors="pt").input_ids.to(device)
        max_new = int(body.get("max_tokens", 16))
        min_new = max_new if body.get("ignore_eos") else 0

        def chunk(payload: dict[str, Any]) -> str:
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            async with lock:
                loop = asyncio.get_running_loop()
                queue: asyncio.Queue[int | None] = asyncio.Queue()

                def generate() -> None:
                    with torch.inference_mode():
                        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                       min_new_tokens=min_new, do_sample=False, streamer=QueueStreamer(loop, queue),
                                       pad_token_id=tokenizer.eos_token_id)

                work = loop.run_in_executor(None, generate)
                count = 0
                while (token := await queue.get()) is not None:
                    count += 1
                    text = tokenizer.decode([token])
                    yield chunk({"object": "text_completion", "model": model_name,
                                 "choices": [{"index": 0, "text": text, "finish_reason": None}]})
                await work
            usage = {"prompt_tokens": ids.shape[1], "completion_tokens": count,
                     "total_tokens": ids.shape[1] + count}
            yield chunk({"object": "text_completion", "model": model_name, "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _serve_baseline(model_path: Path, model_name: str, port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(model_path, model_name), host="127.0.0.1", port=port, log_level="warning")


# --- running servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(command: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}; see {log}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ready_url} not ready after 300s; see {log}")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _warm_up(base_url: str, model: str) -> None:
    body = {"model": model, "prompt": "warm up", "max_tokens": 4, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=120) as r:
        for _ in r.iter_lines():
            pass


# --- (c) the engine alone ---------------------------------------------------------------------------


async def _engine_alone(model_path: Path, model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    from serving.engine import SamplingParams
    from serving.engine_process import EngineProcess

    # The engine exactly as the server runs it (in its own process), minus HTTP.
    engine = EngineProcess(model_path, model_name=model_name, max_batch_size=args.concurrency)
    engine.start()
    try:
        while not engine.loaded:
            if engine.dead:
                raise RuntimeError("the engine failed to load")
            await asyncio.sleep(0.1)
        params = SamplingParams(max_tokens=args.output_len, temperature=0, ignore_eos=True)
        warm_up = SamplingParams(max_tokens=4, temperature=0)
        async for _ in engine.submit(engine.encode_prompt("warm up"), warm_up):
            pass
        prompts = [engine.encode_prompt(build_prompt(args.input_len, i)) for i in range(args.requests)]
        slots = asyncio.Semaphore(args.concurrency)
        ttft: list[float] = []
        e2el: list[float] = []
        itl: list[float] = []
        tokens = 0

        async def one(ids: list[int]) -> None:
            nonlocal tokens
            async with slots:
                sent = time.perf_counter()
                last: float | None = None
                async for out in engine.submit(ids, params):
                    now = time.perf_counter()
                    if last is None:
                        ttft.append(now - sent)
                    else:
                        itl.append(now - last)
                    last = now
                    tokens += out.new_tokens
                e2el.append(time.perf_counter() - sent)

        start = time.perf_counter()
        await asyncio.gather(*[one(ids) for ids in prompts])
        duration = time.perf_counter() - start
    finally:
        await engine.stop()
    return {
        "completed": len(e2el),
        "errors": args.requests - len(e2el),
        "duration_s": duration,
        "output_tokens": tokens,
        "request_throughput": len(e2el) / duration,
        "output_throughput": tokens / duration,
        "ttft": _stats_ms(ttft),
        "itl": _stats_ms(itl),
        "e2el": _stats_ms(e2el),
    }


def _transformers_cb(model_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """transformers' own continuous batching (`generate_batch`, paged attention) on the same prompts, all
    submitted at once (offline: no streaming, no HTTP), for the record of why the engine is our own."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    prompts = [tokenizer.encode(build_prompt(args.input_len, i)) for i in range(args.requests)]
    # eos_token_id=-1: no token ends a sequence early, as ignore_eos does for (a)-(c)
    config = GenerationConfig(max_new_tokens=args.output_len, do_sample=False, eos_token_id=-1)
    model.generate_batch(inputs=prompts[:2], generation_config=GenerationConfig(max_new_tokens=4,
                                                                               do_sample=False))
    start = time.perf_counter()
    outputs = model.generate_batch(inputs=prompts, generation_config=config)
    duration = time.perf_counter() - start
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    return {"completed": len(outputs), "errors": args.requests - len(outputs), "duration_s": duration,
            "output_tokens": tokens, "request_throughput": len(outputs) / duration,
            "output_throughput": tokens / duration, "ttft": _stats_ms([]), "itl": _stats_ms([]),
            "e2el": _stats_ms([])}


def _stats_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    ms = np.asarray(values) * 1000.0
    return {"mean": float(ms.mean()), **{f"p{p}": float(np.percentile(ms, p)) for p in (50, 90, 99)}}


# --- the run ----------------------------------------------------------------------------------------


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model in BUILDERS:
        directory = args.models_dir / args.model
        if not (directory / "config.json").is_file():
            print(f"building the {args.model} model in {directory} ...", flush=True)
        return BUILDERS[args.model](directory)
    path = Path(args.model)
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model: {args.model!r} is neither {' nor '.join(BUILDERS)} nor a model directory")
    return path


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "cpu": cpu, "load_average": list(os.getloadavg()),
            "cpu_pressure": _cpu_pressure()}


def _cpu_pressure() -> str | None:
    """Linux PSI: the share of time tasks waited for a CPU (other work on the machine skews the figures)."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def _load(url: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    result = asyncio.run(run_load(url, model=model, concurrency=args.concurrency, requests=args.requests,
                                  input_len=args.input_len, output_len=args.output_len,
                                  timeout_s=args.max_seconds))
    return result.to_dict()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    console = Console(stderr=True)
    model_path = _model_dir(args)
    name = model_path.name
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    workload = {"concurrency": args.concurrency, "requests": args.requests, "input_len": args.input_len,
                "output_len": args.output_len}
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "model": name,
        "workload": workload,
        "results": {},
    }

    port = free_port()
    with console.status(f"(a) baseline: model.generate behind a lock, {name} ..."), _server(
        [sys.executable, "-m", "serving.sidebyside", "--serve-baseline", str(model_path), "--port", str(port)],
        {}, f"http://127.0.0.1:{port}/health", logs / "baseline.log",
    ):
        _warm_up(f"http://127.0.0.1:{port}", name)
        report["results"]["baseline"] = _load(f"http://127.0.0.1:{port}", name, args)
    console.log("baseline done")

    port = free_port()
    env = {"MODEL_PATH": str(model_path), "SERVESTACK_HOST": "127.0.0.1", "SERVESTACK_PORT": str(port),
           "SERVESTACK_MAX_BATCH_SIZE": str(args.concurrency), "SERVESTACK_MAX_QUEUE": str(4 * args.concurrency),
           "SERVESTACK_MAX_TOKENS": str(max(args.output_len, 16)), "SERVESTACK_LOG_LEVEL": "warning"}
    with console.status(f"(b) our server over HTTP, {name} ..."), _server(
        [sys.executable, "-m", "serving"], env, f"http://127.0.0.1:{port}/health/ready", logs / "server.log"
    ):
        _warm_up(f"http://127.0.0.1:{port}", name)
        report["results"]["server"] = _load(f"http://127.0.0.1:{port}", name, args)
    console.log("server done")

    with console.status(f"(c) our engine alone, {name} ..."):
        # In a fresh process too, like (a) and (b): nothing else of this process competes with it.
        command = [sys.executable, "-m", "serving.sidebyside", "--run-engine", str(model_path),
                   *(f"--{k.replace('_', '-')}={v}" for k, v in workload.items())]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        (logs / "engine.log").write_text(done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"the engine-alone run failed ({done.returncode}); see {logs / 'engine.log'}")
        report["results"]["engine"] = json.loads(done.stdout.strip().splitlines()[-1])
    console.log("engine done")

    if args.with_transformers_cb:
        with console.status(f"(d) transformers generate_batch, {name} ..."):
            command = [sys.executable, "-m", "serving.sidebyside", "--run-transformers-cb", str(model_path),
                       *(f"--{k.replace('_', '-')}={v}" for k, v in workload.items())]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            (logs / "transformers-cb.log").write_text(done.stderr)
            if done.returncode == 0:
                report["results"]["transformers_cb"] = json.loads(done.stdout.strip().splitlines()[-1])
            else:
                console.log(f"transformers generate_batch failed; see {logs / 'transformers-cb.log'}")
        console.log("transformers generate_batch done")

    report["ratios"] = ratios(report["results"])
    report["machine"]["load_average_after"] = list(os.getloadavg())
    report["machine"]["cpu_pressure_after"] = _cpu_pressure()
    return report


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    base, server, engine = results["baseline"], results["server"], results["engine"]
    speedup = server["output_throughput"] / base["output_throughput"] if base["output_throughput"] else None
    share = server["output_throughput"] / engine["output_throughput"] if engine["output_throughput"] else None
    p99, median = server["ttft"]["p99"], base["ttft"]["p50"]
    return {
        "server_vs_baseline_throughput": speedup,
        "server_vs_engine_throughput": share,
        "server_ttft_p99_ms": p99,
        "baseline_ttft_p50_ms": median,
        "goals": {
            f"server >= {GOAL_SPEEDUP:g}x baseline": speedup is not None and speedup >= GOAL_SPEEDUP,
            f"server >= {GOAL_HTTP_SHARE:.0%} of engine alone": share is not None and share >= GOAL_HTTP_SHARE,
            "server p99 TTFT < baseline median TTFT": p99 is not None and median is not None and p99 < median,
        },
    }


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    w = report["workload"]
    title = (f"{report['model']}: concurrency {w['concurrency']}, {w['requests']} requests, "
             f"~{w['input_len']} tokens in, {w['output_len']} out | {report['machine']['cores']} cores, "
             f"{report['date']}")
    table = Table(title=title, caption="latencies in ms; (a) generate() behind a lock, (b) python -m serving "
                  "over HTTP, (c) the engine alone, (d) transformers' generate_batch, offline")
    for column in ("", "out tok/s", "req/s", "TTFT p50", "TTFT p99", "ITL p50", "E2E p50", "errors"):
        table.add_column(column, justify="right" if column else "left", no_wrap=True)
    labels = {"baseline": "(a) baseline", "server": "(b) server", "engine": "(c) engine",
              "transformers_cb": "(d) hf CB"}
    for key, label in labels.items():
        if key not in report["results"]:
            continue
        r = report["results"][key]
        table.add_row(label, f"{r['output_throughput']:.1f}", f"{r['request_throughput']:.2f}",
                      ms(r["ttft"]["p50"]), ms(r["ttft"]["p99"]), ms(r["itl"]["p50"]), ms(r["e2el"]["p50"]),
                      str(r["errors"]))
    ratio = report["ratios"]
    goals = Table(title="ratios and goals")
    goals.add_column("measure")
    goals.add_column("value", justify="right")
    goals.add_column("goal")
    goals.add_column("met")
    met = list(ratio["goals"].values())
    speedup, share = ratio["server_vs_baseline_throughput"], ratio["server_vs_engine_throughput"]
    goals.add_row("server / baseline throughput", "-" if speedup is None else f"{speedup:.2f}x",
                  f">= {GOAL_SPEEDUP:g}x", "yes" if met[0] else "NO")
    goals.add_row("server / engine alone throughput", "-" if share is None else f"{share:.0%}",
                  f">= {GOAL_HTTP_SHARE:.0%}", "yes" if met[1] else "NO")
    goals.add_row("server TTFT p99 vs baseline TTFT p50",
                  f"{ms(ratio['server_ttft_p99_ms'])} vs {ms(ratio['baseline_ttft_p50_ms'])} ms", "below",
                  "yes" if met[2] else "NO")
    # Logs are not terminals; rich would fold the table to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(table)
    console.print(goals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.sidebyside", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2",
                        help=f"{' or '.join(BUILDERS)} (built on first use), or a model directory")
    parser.add_argument("--models-dir", type=Path, default=Path("/tmp/servestack-models"),
                        help="where bundled models are built and reused")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="time limit of each load run")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--logs", default="/tmp/servestack-sidebyside", help="server logs go here")
    parser.add_argument("--serve-baseline", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--with-transformers-cb", action="store_true",
                        help="also measure transformers' generate_batch on the same prompts (offline)")
    parser.add_argument("--run-engine", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-transformers-cb", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.serve_baseline is not None:
        _serve_baseline(args.serve_baseline, args.serve_baseline.name, args.port)
        return 0
    for name in ("concurrency", "requests", "input_len", "output_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.run_transformers_cb is not None:
        print(json.dumps(_transformers_cb(args.run_transformers_cb, args)))
        return 0
    if args.run_engine is not None:
        print(json.dumps(asyncio.run(_engine_alone(args.run_engine, args.run_engine.name, args))))
        return 0

    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())


