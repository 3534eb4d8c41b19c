"""Per-client limits per minute, counted in a real Redis-protocol store (valkey-server) shared by replicas."""

from __future__ import annotations

import asyncio
import time

import pytest

from serving.keys import Client
from serving.limits import Limits, MemoryCounter, StoreCounter
from tests.serving.conftest import free_port


@pytest.fixture
def store_url(limits_store: str) -> str:
    return limits_store


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_requests_beyond_the_limit_wait_for_the_next_minute(store_url: str) -> None:
    async def scenario() -> None:
        clock = Clock(6_000_000.0 + 45.5)  # 14.5 s before the minute ends
        limits = Limits(StoreCounter(store_url), clock=clock)
        client = Client("rpm-client", requests_per_minute=3)
        assert [(await limits.admit(client)).allowed for _ in range(3)] == [True, True, True]
        refused = await limits.admit(client)
        assert (refused.allowed, refused.kind, refused.limit, refused.used, refused.retry_after) == (
            False, "requests", 3, 3, 15)
        clock.now += 15  # the next window
        assert (await limits.admit(client)).allowed

    _run(scenario())


def test_a_limit_holds_across_replicas_sharing_the_store(store_url: str) -> None:
    async def scenario() -> None:
        clock = Clock(7_000_000.0 * 60)
        replicas = [Limits(StoreCounter(store_url), clock=clock) for _ in range(3)]
        client = Client("shared-client", requests_per_minute=5)
        decisions = await asyncio.gather(*(replicas[i % 3].admit(client) for i in range(9)))
        assert sum(d.allowed for d in decisions) == 5

    _run(scenario())


def test_tokens_are_charged_when_answers_end_and_stop_the_next_request(store_url: str) -> None:
    async def scenario() -> None:
        clock = Clock(8_000_000.0 * 60 + 10)
        limits = Limits(StoreCounter(store_url), clock=clock)
        client = Client("tpm-client", tokens_per_minute=100)
        assert (await limits.admit(client)).allowed
        await limits.charge(client, 60)
        assert (await limits.admit(client)).allowed  # 60 of 100 used: admitted
        await limits.charge(client, 70)  # this answer passes the limit: it was already admitted
        refused = await limits.admit(client)
        assert (refused.allowed, refused.kind, refused.limit, refused.used, refused.retry_after) == (
            False, "tokens", 100, 130, 50)

    _run(scenario())


def test_clients_are_counted_apart(store_url: str) -> None:
    async def scenario() -> None:
        limits = Limits(StoreCounter(store_url), clock=Clock(9_000_000.0 * 60))
        a, b = Client("client-a", requests_per_minute=1), Client("client-b", requests_per_minute=1)
        assert (await limits.admit(a)).allowed and (await limits.admit(b)).allowed
        assert not (await limits.admit(a)).allowed

    _run(scenario())


def test_counters_expire_after_their_window(store_url: str) -> None:
    async def scenario() -> None:
        import redis.asyncio as redis

        limits = Limits(StoreCounter(store_url), clock=Clock(10_000_000.0 * 60))
        await limits.admit(Client("ttl-client", requests_per_minute=9))
        store = redis.Redis.from_url(store_url)
        ttl = await store.ttl("servestack:requests:ttl-client:10000000")
        await store.aclose()
        assert 60 < ttl <= 120

    _run(scenario())


def test_an_unreachable_store_admits_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[int] = []

    async def scenario() -> float:
        limits = Limits(StoreCounter(f"redis://:x@127.0.0.1:{free_port()}/0"),
                        on_store_error=lambda: failures.append(1))
        started = time.monotonic()
        decision = await limits.admit(Client("c", requests_per_minute=1, tokens_per_minute=1))
        await limits.charge(Client("c", tokens_per_minute=1), 5)
        assert decision.allowed
        return time.monotonic() - started

    with caplog.at_level("ERROR", "servestack.limits"):
        _run(scenario())
    assert len(failures) == 2
    assert caplog.text.count("limits store unreachable") == 1  # said once, not per request


def test_one_replica_counts_in_memory() -> None:
    async def scenario() -> None:
        clock = Clock(11_000_000.0 * 60)
        limits = Limits(MemoryCounter(), clock=clock)
        client = Client("solo", requests_per_minute=2, tokens_per_minute=10)
        assert (await limits.admit(client)).allowed and (await limits.admit(client)).allowed
        assert (await limits.admit(client)).kind == "requests"
        clock.now += 60
        assert (await limits.admit(client)).allowed
        await limits.charge(client, 10)
        assert (await limits.admit(client)).kind == "tokens"

    _run(scenario())


def test_a_client_without_limits_is_never_counted() -> None:
    async def scenario() -> None:
        counter = MemoryCounter()
        limits = Limits(counter)
        assert all([(await limits.admit(Client("free"))).allowed for _ in range(100)])
        await limits.charge(Client("free"), 10**9)
        assert counter._values == {}

    _run(scenario())
