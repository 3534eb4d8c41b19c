"""Load generator for an OpenAI-compatible completions endpoint, with vLLM's serving-benchmark metrics.

    python -m serving.bench --url http://127.0.0.1:8000 --concurrency 1,4,16 --requests 64 \\
        --input-len 128 --output-len 64 [--rate 8] [--goodput ttft:500 tpot:50] [--json out.json]

Every request streams `POST /v1/completions` with `ignore_eos` (so the output length is exact) and
`stream_options.include_usage` (so the real prompt and output token counts come from the server).
The metrics follow vLLM's benchmarks/benchmark_serving.py:

- TTFT: from sending the request to the first chunk carrying text.
- ITL: the gap between consecutive text chunks, pooled over all requests.
- TPOT: per request, (E2EL - TTFT) / (output tokens - 1), for requests with more than one token.
- E2EL: from sending the request to its last text chunk.
- request and output-token throughput: completed requests and their output tokens over the run.
- goodput: completed requests per second that meet every given SLO (ttft, tpot, e2el in ms).

A run is bounded in requests and in time: after `timeout_s` (`--max-seconds`) requests in flight are
cancelled and counted as errors, and requests not yet sent are not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

SLO_METRICS = ("ttft", "tpot", "e2el")
PERCENTILES = (50, 90, 99)
TIME_LIMIT = "time limit"
# Common one-token English words: a prompt of N of them is close to N tokens for BPE tokenizers.
_WORD_TEXT = """
the of and to in is was for on are with as at be by this from or have an they which one you had not but
what all were when we there can more if no out so said up use its about into than them only new some could
time these two may then do first any my now such like our over man me even most made after also did many
before must through back years where much your way well down
"""
_WORDS = tuple(_WORD_TEXT.split())


@dataclass
class RequestResult:
    """One request: latencies in seconds (from sending it), token counts from the server's usage."""

    ok: bool
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None

    @property
    def tpot(self) -> float | None:
        if not self.ok or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


def _stats_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    if not values_s:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    ms = np.asarray(values_s, dtype=float) * 1000.0
    stats: dict[str, float | None] = {"mean": float(np.mean(ms))}
    for p in PERCENTILES:
        stats[f"p{p}"] = float(np.percentile(ms, p))
    return stats


@dataclass
class LoadResult:
    """The outcome of one load level; `to_dict()` gives latencies in ms and rates per second."""

    concurrency: int
    requests: int
    input_len: int
    output_len: int
    rate: float | None
    duration_s: float
    results: list[RequestResult]

    @property
    def completed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def errors(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def not_sent(self) -> int:
        return self.requests - len(self.results)

    @property
    def error_kinds(self) -> dict[str, int]:
        return dict(Counter(r.error or "unknown" for r in self.results if not r.ok))

    def _ok(self) -> list[RequestResult]:
        return [r for r in self.results if r.ok]

    def goodput(self, slos_ms: Mapping[str, float]) -> float:
        """Completed requests per second meeting every SLO (keys: ttft, tpot, e2el; values in ms)."""
        unknown = set(slos_ms) - set(SLO_METRICS)
        if unknown:
            raise ValueError(f"goodput SLO {sorted(unknown)} unknown; allowed: {', '.join(SLO_METRICS)}")
        good = 0
        for r in self._ok():
            measured = {"ttft": r.ttft, "tpot": r.tpot or 0.0, "e2el": r.latency}
            good += all(measured[name] * 1000.0 <= limit for name, limit in slos_ms.items())
        return self._per_second(good)

    def _per_second(self, count: int) -> float:
        return count / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        ok = self._ok()
        output_tokens = sum(r.output_tokens for r in ok)
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "input_len": self.input_len,
            "output_len": self.output_len,
            "rate": self.rate,
            "completed": self.completed,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "not_sent": self.not_sent,
            "duration_s": self.duration_s,
            "prompt_tokens": sum(r.prompt_tokens for r in ok),
            "output_tokens": output_tokens,
            "request_throughput": self._per_second(self.completed),
            "output_throughput": self._per_second(output_tokens),
            "ttft": _stats_ms([r.ttft for r in ok]),
            "tpot": _stats_ms([t for r in ok if (t := r.tpot) is not None]),
            "itl": _stats_ms([gap for r in ok for gap in r.itl]),
            "e2el": _stats_ms([r.latency for r in ok]),
        }


def build_prompt(input_len: int, index: int) -> str:
    """A deterministic prompt of about `input_len` tokens, different per request (no shared prefix)."""
    return " ".join(_WORDS[(index + i) % len(_WORDS)] for i in range(input_len))


def arrival_offsets(requests: int, rate: float | None, seed: int = 0) -> list[float]:
    """Send times in seconds from the start: all at once, or a Poisson process of `rate` per second."""
    if rate is None:
        return [0.0] * requests
    rng = random.Random(seed)
    offsets, t = [], 0.0
    for _ in range(requests):
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def completions_url(url: str) -> str:
    base = url.rstrip("/")
    return f"{base.removesuffix('/v1')}/v1/completions"


async def _stream_one(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, Any]
) -> RequestResult:
    sent = time.perf_counter()
    first: float | None = None
    last = sent
    result = RequestResult(ok=False)
    async with session.post(url, json=body, headers=headers) as response:
        if response.status != 200:
            await response.read()
            result.error = f"HTTP {response.status}"
            return result
        async for line in response.content:  # one SSE line at a time, as the bytes arrive
            if not line.startswith(b"data:"):
                continue
            data = line[len(b"data:") :].strip()
            if data == b"[DONE]":
                if first is None:
                    result.error = "no tokens"
                    return result
                result.ok = True
                result.ttft, result.latency = first - sent, last - sent
                # Without usage from the server, each text chunk counts as one token.
                result.output_tokens = result.output_tokens or len(result.itl) + 1
                return result
            chunk = json.loads(data)
            if chunk.get("error"):
                result.error = "error in stream"
                return result
            choices = chunk.get("choices") or []
            if choices and choices[0].get("text"):
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    result.itl.append(now - last)
                last = now
            if usage := chunk.get("usage"):
                result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                result.output_tokens = int(usage.get("completion_tokens") or 0)
    result.error = "stream ended without [DONE]"
    return result


async def _run_load(
    url: str,
    *,
    model: str,
    api_key: str | None,
    concurrency: int,
    requests: int,
    input_len: int,
    output_len: int,
    rate: float | None,
    timeout_s: float,
    on_result: Callable[[RequestResult], None] | None = None,
) -> LoadResult:
    for name, value in (("concurrency", concurrency), ("requests", requests), ("input_len", input_len),
                        ("output_len", output_len)):  # fmt: skip
        if value < 1:
            raise ValueError(f"{name} must be >= 1 (got {value})")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s (got {rate})")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 (got {timeout_s})")

    endpoint = completions_url(url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    results: list[RequestResult] = []
    slots = asyncio.Semaphore(concurrency)

    def record(result: RequestResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    async def one(session: aiohttp.ClientSession, index: int) -> None:
        body = {
            "model": model,
            "prompt": build_prompt(input_len, index),
            "max_tokens": output_len,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
        async with slots:
            try:
                result = await _stream_one(session, endpoint, headers, body)
            except asyncio.CancelledError:
                record(RequestResult(ok=False, error=TIME_LIMIT))
                raise
            except TimeoutError:  # the session's timeout is the run's time limit
                result = RequestResult(ok=False, error=TIME_LIMIT)
            except Exception as e:  # whatever one request meets is that request's error, not the run's
                result = RequestResult(ok=False, error=type(e).__name__)
            record(result)

    async def schedule(session: aiohttp.ClientSession, start: float) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            for index, offset in enumerate(arrival_offsets(requests, rate)):
                delay = start + offset - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(session, index)))
            await asyncio.gather(*tasks)
        finally:  # at the time limit, cut off what is in flight
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # aiohttp, as vLLM's serving benchmark uses: it parses a stream at about half the CPU cost of httpx, which
    # matters when the load generator shares the machine with the server it measures.
    # What this process holds before the run (aiohttp, and in serving.sidebyside torch and transformers) is
    # frozen out of the garbage collector: a full collection walking it paused this load generator for 0.25 s
    # in the middle of a run, and every stream's latency with it.
    gc.collect()
    gc.freeze()
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        runner = asyncio.create_task(schedule(session, start))
        done, _ = await asyncio.wait({runner}, timeout=timeout_s)
        if not done:
            runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        duration = time.perf_counter() - start
    return LoadResult(concurrency, requests, input_len, output_len, rate, duration, results)


async def run_load(
    url: str,
    *,
    model: str,
    api_key: str | None = None,
    concurrency: int,
    requests: int,
    input_len: int,
    output_len: int,
    rate: float | None = None,
    timeout_s: float = 300.0,
) -> LoadResult:
    """Send `requests` streamed completions, at most `concurrency` at a time, within `timeout_s`."""
    return await _run_load(
        url,
        model=model,
        api_key=api_key,
        concurrency=concurrency,
        requests=requests,
        input_len=input_len,
        output_len=output_len,
        rate=rate,
        timeout_s=timeout_s,
    )


# --- command line -----------------------------------------------------------------------------------


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, e.g. 1,4,16 (got {text!r})")
    return values


def _positive_int(text: str) -> int:
    values = _positive_ints(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one integer >= 1 (got {text!r})")
    return values[0]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 (got {text!r})")
    return value


def _slo(text: str) -> tuple[str, float]:
    name, _, limit = text.partition(":")
    if name not in SLO_METRICS:
        raise argparse.ArgumentTypeError(f"SLO {text!r}: metric must be one of {', '.join(SLO_METRICS)}")
    try:
        return name, _positive_float(limit)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"SLO {text!r}: expected METRIC:MILLISECONDS, e.g. ttft:500") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.bench",
        description="Streamed load on an OpenAI-compatible /v1/completions endpoint, with vLLM's metrics.",
    )
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SERVESTACK_API_KEY") or None,
        help="sent as 'Authorization: Bearer KEY' (default: $SERVESTACK_API_KEY)",
    )
    parser.add_argument("--model", help="model name (default: the first one /v1/models lists)")
    parser.add_argument("--concurrency", type=_positive_ints, default=[1], help="levels, e.g. 1,4,16")
    parser.add_argument("--requests", type=_positive_int, required=True, help="requests per level")
    parser.add_argument("--input-len", type=_positive_int, required=True, help="prompt length (about, in tokens)")
    parser.add_argument("--output-len", type=_positive_int, required=True, help="output tokens per request")
    parser.add_argument(
        "--rate", type=_positive_float, help="Poisson arrival rate in requests/s (default: all at once)"
    )
    parser.add_argument("--max-seconds", type=_positive_float, default=300.0, help="time limit per level")
    parser.add_argument(
        "--goodput", type=_slo, nargs="+", default=[], metavar="METRIC:MS", help="e.g. ttft:500 tpot:50"
    )
    parser.add_argument("--json", type=Path, help="write every level's results to this file")
    return parser


async def _first_model(url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, session.get(
        f"{url.rstrip('/').removesuffix('/v1')}/v1/models", headers=headers, raise_for_status=True
    ) as response:
        models = (await response.json()).get("data") or []
    if not models:
        raise ValueError("GET /v1/models lists no model; pass --model")
    return str(models[0]["id"])


def _report(level: dict[str, Any], goodput: float | None) -> Any:
    """One level for the terminal: a headline, the latency table, then the rates."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = f"concurrency {level['concurrency']}: {level['completed']}/{level['requests']} completed"
    if level["errors"]:
        kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(level["error_kinds"].items()))
        title += f", {level['errors']} errors ({kinds})"
    if level["not_sent"]:
        title += f", {level['not_sent']} not sent (time limit)"
    table = Table()
    table.add_column("latency (ms)")
    for column in ("mean", "p50", "p90", "p99"):
        table.add_column(column, justify="right")
    for metric in ("ttft", "tpot", "itl", "e2el"):
        stats = level[metric]
        table.add_row(metric.upper(), *("-" if stats[k] is None else f"{stats[k]:.1f}" for k in stats))
    rates = (
        f"{level['request_throughput']:.2f} req/s, {level['output_throughput']:.1f} output tok/s, "
        f"{level['prompt_tokens']} prompt + {level['output_tokens']} output tokens "
        f"in {level['duration_s']:.1f} s" + ("" if goodput is None else f", goodput {goodput:.2f} req/s")
    )
    return Group(Text(title, style="bold"), table, Text(rates), Text(""))


def _advance(progress: Any, task: Any) -> Callable[[RequestResult], None]:
    return lambda _: progress.advance(task)


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import Progress

    model = args.model or await _first_model(args.url, args.api_key)

    # Logs are not terminals; rich would fold the table to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 140)
    slos = dict(args.goodput)
    levels = []
    for concurrency in args.concurrency:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"concurrency {concurrency}", total=args.requests)
            result = await _run_load(
                args.url,
                model=model,
                api_key=args.api_key,
                concurrency=concurrency,
                requests=args.requests,
                input_len=args.input_len,
                output_len=args.output_len,
                rate=args.rate,
                timeout_s=args.max_seconds,
                on_result=_advance(progress, task),
            )
        level = result.to_dict()
        level["model"] = model
        if slos:
            level["goodput"] = {"slos_ms": slos, "request_throughput": result.goodput(slos)}
        console.print(_report(level, level["goodput"]["request_throughput"] if slos else None))
        levels.append(level)
    return levels


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        levels = asyncio.run(_main(args))
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        print(f"bench failed: {args.url}: {e}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps({"url": args.url, "levels": levels}, indent=2) + "\n")
    return 0 if all(level["completed"] for level in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
