"""Each client's requests and tokens per minute, held across replicas.

Counting is by fixed one-minute windows, as Envoy's rate limit service does: a counter per client, kind
and minute, incremented atomically in a Redis-protocol store (SERVESTACK_LIMITS_STORE_URL) that every
replica shares, expiring after the window. Without a store (one replica), the counters live in this
process.

- A request is admitted when the client's requests this minute stay within its limit and its tokens this
  minute have not reached theirs; otherwise it gets 429 with Retry-After (the seconds to the next window).
- Tokens are known only once an answer ends: each answer's prompt and completion tokens are charged then,
  so a client may pass its token limit by one answer, and waits out the rest of the minute afterwards.
- A store that cannot be reached within STORE_TIMEOUT_SECONDS does not stop the service: the request is
  admitted (fail open, as Envoy's rate limit filter does by default) and the failure is counted and logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from serving.keys import Client

log = logging.getLogger("servestack.limits")

WINDOW_SECONDS = 60
STORE_TIMEOUT_SECONDS = 0.25
# Failures of the store are logged at most this often.
LOG_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    kind: str = ""  # "requests" or "tokens" when refused
    limit: int = 0
    used: int = 0
    retry_after: int = 0  # seconds


class Counter(Protocol):
    async def incr(self, key: str, amount: int) -> int: ...
    async def get(self, key: str) -> int: ...
    async def close(self) -> None: ...


class MemoryCounter:
    """Counters of this process only."""

    def __init__(self) -> None:
        self._values: dict[str, int] = defaultdict(int)
        self._window: int | None = None

    async def incr(self, key: str, amount: int) -> int:
        self._forget_old(key)
        self._values[key] += amount
        return self._values[key]

    async def get(self, key: str) -> int:
        self._forget_old(key)
        return self._values.get(key, 0)

    async def close(self) -> None:
        pass

    def _forget_old(self, key: str) -> None:
        window = int(key.rsplit(":", 1)[1])
        if window != self._window:
            self._values = defaultdict(int, {k: v for k, v in self._values.items() if k.endswith(f":{window}")})
            self._window = window


class StoreCounter:
    """Counters in a Redis-protocol store, shared by every replica."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=STORE_TIMEOUT_SECONDS,
                                           socket_connect_timeout=STORE_TIMEOUT_SECONDS, decode_responses=True)

    async def incr(self, key: str, amount: int) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            pipe.expire(key, 2 * WINDOW_SECONDS)
            value, _ = await pipe.execute()
        return int(value)

    async def get(self, key: str) -> int:
        value = await self._redis.get(key)
        return int(value) if value is not None else 0

    async def close(self) -> None:
        await self._redis.aclose()


class Limits:
    def __init__(self, counter: Counter, clock: Callable[[], float] = time.time,
                 on_store_error: Callable[[], None] = lambda: None) -> None:
        self._counter = counter
        self._clock = clock
        self._on_store_error = on_store_error
        self._logged = -math.inf

    @classmethod
    def from_url(cls, url: str | None, on_store_error: Callable[[], None] = lambda: None) -> Limits:
        return cls(StoreCounter(url) if url else MemoryCounter(), on_store_error=on_store_error)

    async def close(self) -> None:
        await self._counter.close()

    def _window(self) -> tuple[int, int]:
        """The current window's number and the seconds left in it (at least 1)."""
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        return window, max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))

    async def admit(self, client: Client) -> Decision:
        """Count one request of the client, and say whether it may proceed."""
        if not client.requests_per_minute and not client.tokens_per_minute:
            return Decision(True)
        window, left = self._window()
        try:
            if client.tokens_per_minute:
                tokens = await self._counter.get(f"servestack:tokens:{client.id}:{window}")
                if tokens >= client.tokens_per_minute:
                    return Decision(False, "tokens", client.tokens_per_minute, tokens, left)
            if client.requests_per_minute:
                requests = await self._counter.incr(f"servestack:requests:{client.id}:{window}", 1)
                if requests > client.requests_per_minute:
                    return Decision(False, "requests", client.requests_per_minute, requests - 1, left)
        except (RedisError, OSError) as e:  # fail open, said once in a while
            self._store_failed(e)
        return Decision(True)

    async def charge(self, client: Client, tokens: int) -> None:
        """Count an answer's tokens against the client's limit for this minute."""
        if not client.tokens_per_minute or tokens <= 0:
            return
        window, _ = self._window()
        try:
            await self._counter.incr(f"servestack:tokens:{client.id}:{window}", tokens)
        except (RedisError, OSError) as e:
            self._store_failed(e)

    def _store_failed(self, error: Exception) -> None:
        self._on_store_error()
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY_SECONDS:
            self._logged = now
            log.error("limits store unreachable (%s: %s); admitting requests without limits until it answers",
                      type(error).__name__, error)
