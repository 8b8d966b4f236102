"""The rate-limit bucket stores: Redis (shared by replicas) against a real redis-server on loopback."""

from __future__ import annotations

import pytest
import redis

from api.ratelimit import KEY_PREFIX, FileBuckets, MemoryBuckets, RateLimiter, RedisBuckets, bucket_store
from api.settings import SettingsError, load_settings
from tests.api.servers import free_port
from tests.redis import RedisServer


def test_storage_urls_name_their_store(tmp_path: object, redis_url: str) -> None:
    assert isinstance(bucket_store(None), MemoryBuckets)
    assert isinstance(bucket_store("file:///tmp/x.bin"), FileBuckets)
    shared = bucket_store(redis_url)
    assert isinstance(shared, RedisBuckets)
    shared.close()
    assert load_settings(rate_limit_storage="redis://cache.internal:6379/2").rate_limit_storage \
        == "redis://cache.internal:6379/2"
    with pytest.raises(SettingsError, match="rate_limit_storage"):
        load_settings(rate_limit_storage="memcached://cache:11211")


def test_two_replicas_share_one_budget_in_redis(redis_url: str) -> None:
    # Two limiters stand for two replicas (separate processes in tests/reliability/test_replicas.py).
    stores = [RedisBuckets(redis_url), RedisBuckets(redis_url)]
    a = RateLimiter(per_minute=60, burst=3, store=stores[0])
    b = RateLimiter(per_minute=60, burst=3, store=stores[1])
    # burst 3 across both, then refused: a token refills at 60/min = 1 per second, so the wait is just under 1 s
    # (the few milliseconds these calls took refilled a few thousandths of a token).
    answers = [a.allow("k"), b.allow("k"), a.allow("k"), b.allow("k")]
    assert [ok for ok, _ in answers] == [True, True, True, False]
    assert 0.9 < answers[3][1] <= 1.0
    assert a.allow("other")[0] is True  # keys have their own buckets
    # A bucket untouched for burst/rate = 3 s is full again, so Redis may drop it then: 3 s + 1 s of slack.
    with redis.Redis.from_url(redis_url) as client:
        ttl = client.pttl(KEY_PREFIX + "k")
    for store in stores:
        store.close()
    assert 3000 < ttl <= 4000


def test_a_redis_outage_limits_per_worker_and_recovers(redis_server: RedisServer) -> None:
    store = RedisBuckets(redis_server.url, retry_seconds=0.0)
    limiter = RateLimiter(per_minute=60, burst=2, store=store)
    assert limiter.allow("k")[0] is True  # 1 of 2 spent in Redis
    redis_server.stop()
    # Redis is gone: the worker's own bucket takes over (full: 2 more), and the request still gets an answer.
    assert [limiter.allow("k")[0] for _ in range(3)] == [True, True, False]
    assert store.failures == 3
    redis_server.start()  # the same port, an empty server
    assert [limiter.allow("k")[0] for _ in range(3)] == [True, True, False]
    assert store.failures == 3
    store.close()


def test_an_unreachable_redis_is_retried_after_the_back_off() -> None:
    store = RedisBuckets(f"redis://127.0.0.1:{free_port()}/0", retry_seconds=60.0)
    limiter = RateLimiter(per_minute=60, burst=1, store=store)
    assert [limiter.allow("k")[0] for _ in range(2)] == [True, False]
    assert store.failures == 1  # the second request did not wait on Redis again
    store.close()
