"""`servestack verify --stack NAME`: does the stack's endpoint answer, and how fast.

1. The endpoint and an API key: the stack's outputs `endpoint` and `api_keys` (a secret, by client id; the
   first client, or `--client`), read through the Automation API; or given (`--endpoint`, `--api-key-file`).
2. Readiness: `GET /v1/models` with the key answers 200 within `--timeout` seconds. The gateway routes only
   /v1 to the serving pods, so this is the readiness a client sees (model loaded, route, TLS, key).
3. One completion through the official `openai` client.
4. `serving.bench` with a fixed workload (WORKLOAD), every request streamed and counted.
5. The result: MEASURED_DIR/STACK.json, serving.bench's JSON (`levels`) plus what was verified, where
   `servestack compare` picks it up for that stack.

Exit codes: 0 verified; 1 the endpoint did not become ready, refused the key, or failed a request;
2 bad input (no such output, an unreadable key file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.markup import escape

from servestack import terminal

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
POLL_SECONDS = 2.0
REQUEST_SECONDS = 10.0


class VerifyError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Workload:
    """What serving.bench sends: per level of concurrency, `requests` streamed completions."""

    concurrency: tuple[int, ...]
    requests: int
    input_len: int  # about, in tokens
    output_len: int  # exactly (ignore_eos)


# The fixed workload: one request at a time (the latency a lone client sees), then four at once.
WORKLOAD = Workload(concurrency=(1, 4), requests=8, input_len=64, output_len=32)


@dataclass(frozen=True)
class Target:
    endpoint: str  # base URL, without /v1
    api_key: str | None
    client: str | None  # whose key it is
    hint: str | None = None  # how to reach an endpoint that needs a tunnel (the stack's `connect` output)


def target_from_outputs(stack: str, outputs: Mapping[str, Mapping[str, Any]], client: str | None) -> Target:
    """The endpoint and one client's key from the stack's outputs ({"name": {"value", "secret"}})."""
    endpoint = str((outputs.get("endpoint") or {}).get("value") or "")
    if not endpoint:
        raise VerifyError(f"stack {stack} has no `endpoint` output (yet): has `servestack up --stack {stack}` "
                          f"completed? outputs: {', '.join(sorted(outputs)) or 'none'}", EXIT_BAD_INPUT)
    keys = (outputs.get("api_keys") or {}).get("value") or {}
    if not isinstance(keys, Mapping):
        raise VerifyError(f"stack {stack}: output `api_keys` is not a map of client id to key", EXIT_BAD_INPUT)
    if client is not None and client not in keys:
        raise VerifyError(f"--client {client!r}: stack {stack} has no key for that client; its clients: "
                          f"{', '.join(keys) or 'none (no API keys)'}", EXIT_BAD_INPUT)
    chosen = client if client is not None else next(iter(keys), None)
    connect = (outputs.get("connect") or {}).get("value")
    return Target(endpoint.rstrip("/").removesuffix("/v1"), str(keys[chosen]) if chosen else None, chosen,
                  str(connect) if connect else None)


def read_key_file(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as error:
        raise VerifyError(f"--api-key-file {path}: cannot be read ({error.strerror})", EXIT_BAD_INPUT) from None
    if not key:
        raise VerifyError(f"--api-key-file {path}: empty; expected the API key on one line", EXIT_BAD_INPUT)
    return key


def _headers(target: Target) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}


def wait_ready(target: Target, timeout_s: float) -> str:
    """Poll GET /v1/models until it answers 200 (then: the first model's id), or VerifyError at the timeout."""
    url = f"{target.endpoint}/v1/models"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            # No request outlives the deadline by more than a second.
            limit = min(REQUEST_SECONDS, max(deadline - time.monotonic(), 1.0))
            response = httpx.get(url, headers=_headers(target), timeout=limit)
            if response.status_code == 200:
                models = response.json().get("data") or []
                if models:
                    return str(models[0]["id"])
                last = "HTTP 200 listing no model"
            elif response.status_code in (401, 403):
                who = f"client {target.client}'s key" if target.client else "the key" if target.api_key else "no key"
                raise VerifyError(f"{url} refused {who}: HTTP {response.status_code} {response.text[:200]}")
            else:
                last = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            last = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        except ValueError as error:  # not JSON
            last = f"HTTP 200 with a body that is not a model list ({error})"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            hint = f"; is the tunnel up? {target.hint}" if target.hint else ""
            raise VerifyError(f"{url} not ready after {timeout_s:g}s (last: {last}){hint}")
        time.sleep(min(POLL_SECONDS, remaining))


def one_completion(target: Target, model: str) -> dict[str, Any]:
    """One completion through the official openai client: its text and token usage."""
    import openai

    client = openai.OpenAI(base_url=f"{target.endpoint}/v1", api_key=target.api_key or "none",
                           timeout=120.0, max_retries=0)
    try:
        completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                               temperature=0.0)
    except openai.OpenAIError as error:
        raise VerifyError(f"{target.endpoint}/v1/completions failed: {error}") from None
    if not completion.choices or completion.usage is None or completion.usage.completion_tokens < 1:
        raise VerifyError(f"{target.endpoint}/v1/completions answered without text or usage: {completion}")
    return {"text": completion.choices[0].text, "finish_reason": completion.choices[0].finish_reason,
            "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens}


def bench(target: Target, model: str, timeout_s: float = 600.0) -> list[dict[str, Any]]:
    """serving.bench's levels of the fixed workload; VerifyError when any request failed."""
    from serving.bench import run_load

    levels = []
    for concurrency in WORKLOAD.concurrency:
        result = asyncio.run(run_load(target.endpoint, model=model, api_key=target.api_key, concurrency=concurrency,
                                      requests=WORKLOAD.requests, input_len=WORKLOAD.input_len,
                                      output_len=WORKLOAD.output_len, timeout_s=timeout_s))
        level = {**result.to_dict(), "model": model}
        if level["errors"] or level["not_sent"]:
            raise VerifyError(f"serving.bench at concurrency {concurrency}: {level['completed']}/{level['requests']} "
                              f"completed ({level['error_kinds']}, {level['not_sent']} not sent)")
        levels.append(level)
    return levels


def write_measurement(stack: str, url: str, levels: Sequence[Mapping[str, Any]], out_dir: Path,
                      **facts: Any) -> Path:
    """A stack's measured figures as `servestack compare` reads them: serving.bench's JSON, plus the facts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stack}.json"
    document = {"stack": stack, "measured": datetime.now(UTC).isoformat(timespec="seconds"), **facts,
                "url": url, "levels": list(levels)}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def verify(stack: str, target: Target, out_dir: Path, timeout_s: float) -> Path:
    console = terminal.console
    with console.status(f"waiting for {target.endpoint}/v1/models (at most {timeout_s:g}s) ..."):
        started = time.monotonic()
        model = wait_ready(target, timeout_s)
    console.print(f"[green]ready[/]: {escape(target.endpoint)} serves {escape(model)} "
                  f"(after {time.monotonic() - started:.1f}s)")
    completion = one_completion(target, model)
    console.print(f"[green]completion[/]: {completion['completion_tokens']} tokens: {escape(repr(completion['text']))}")
    with console.status(f"serving.bench: {asdict(WORKLOAD)} ..."):
        levels = bench(target, model)
    for level in levels:
        console.print(f"concurrency {level['concurrency']}: {level['output_throughput']:.1f} output tok/s, TTFT p50 "
                      f"{level['ttft']['p50']:.0f} ms, p99 {level['ttft']['p99']:.0f} ms, TPOT p50 "
                      f"{level['tpot']['p50'] or 0:.1f} ms")
    return write_measurement(stack, target.endpoint, levels, out_dir, source="servestack verify", model=model,
                             client=target.client, completion=completion, workload=asdict(WORKLOAD))


def verify_stack(stack: str, out_dir: Path, timeout_s: float, endpoint: str | None = None,
                 api_key_file: Path | None = None, client: str | None = None) -> int:
    """`servestack verify`, also the end of `servestack up`: the exit code, errors printed."""
    from servestack.driver import DriverError, preflight, read_outputs

    try:
        if endpoint is not None:
            key = read_key_file(api_key_file) if api_key_file is not None else os.environ.get("SERVESTACK_API_KEY")
            target = Target(endpoint.rstrip("/").removesuffix("/v1"), key or None, client)
        else:
            if api_key_file is not None:
                raise VerifyError("--api-key-file goes with --endpoint; without it the key comes from the stack's "
                                  "`api_keys` output", EXIT_BAD_INPUT)
            preflight("outputs", stack)
            target = target_from_outputs(stack, read_outputs(stack), client)
        path = verify(stack, target, out_dir, timeout_s)
    except (VerifyError, DriverError) as error:
        terminal.errors.print(f"[bold red]error:[/] verify {escape(stack)}: {escape(str(error))}", highlight=False)
        return error.code
    terminal.console.print(f"verified; measurement written to {path} (`servestack compare` shows it)")
    return 0


def register(commands: Any, out_dir: Path) -> None:
    parser = commands.add_parser("verify", help="wait for the stack's endpoint, send a completion, run the fixed "
                                                "benchmark; the result feeds `servestack compare`")
    parser.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.NAME.yaml)")
    parser.add_argument("--endpoint", help="the endpoint's base URL, instead of the stack's `endpoint` output")
    parser.add_argument("--api-key-file", type=Path,
                        help="a file holding the API key (with --endpoint; default: $SERVESTACK_API_KEY)")
    parser.add_argument("--client", help="whose key of the stack's `api_keys` output to use (default: the first)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the endpoint to answer (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=out_dir / "verify",
                        help="where the measurement goes, as STACK.json (default: %(default)s)")
    parser.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        terminal.errors.print(f"[bold red]error:[/] --timeout must be > 0 seconds (got {args.timeout:g})")
        return EXIT_BAD_INPUT
    return verify_stack(args.stack, args.out, args.timeout, args.endpoint, args.api_key_file, args.client)
