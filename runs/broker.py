"""Dramatiq's Redis broker with a wake-up list, so an idle worker takes a message at once.

Dramatiq's Redis consumer polls: with nothing to fetch it sleeps, backing off up to the worker timeout
(1 s by default), so a run sent to an idle worker waits half that on average before it starts. Here
every enqueue also pushes a token onto a short per-queue list, and an idle consumer blocks on that list
(BLPOP) for up to the worker timeout instead of sleeping; the enqueue wakes it within a Redis round
trip. Everything else (the queues, acks, heartbeats, delayed and requeued messages) is Dramatiq's:
a delayed message wakes its delay queue's consumer, reaches its queue through `enqueue` again when it
is due (and wakes a consumer then), and a message requeued from a dead worker is found by the next
fetch, at most one worker timeout later.

A token nobody takes is harmless (a consumer wakes, fetches nothing and blocks again); the list is
trimmed and expires, so it stays small whether or not a worker runs.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed

WAKE_MAX = 64  # tokens kept per queue: enough to wake every consumer thread of a large fleet
WAKE_TTL_S = 60
BUSY_WAIT_S = 0.005  # every prefetch slot taken: come back soon, so acks (handled between calls) flow


class WakingRedisBroker(RedisBroker):
    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def wake_key(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.wake"

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        message = super().enqueue(message, delay=delay)  # a delayed one comes back with its delay queue's name
        key = self.wake_key(message.queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, WAKE_MAX - 1)
        pipe.expire(key, WAKE_TTL_S)
        pipe.execute()
        return message


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting on the queue's wake-up list when there is nothing to fetch.

    Returning None hands control back to Dramatiq's consumer thread, which then acks finished messages
    and moves due delayed ones before asking for the next message."""

    broker: WakingRedisBroker

    def __next__(self) -> MessageProxy | None:
        try:
            while not self.message_cache:
                free = self.prefetch - self.outstanding_message_count
                if free <= 0:
                    time.sleep(BUSY_WAIT_S)
                    return None
                self.message_cache = self.broker.do_fetch(self.queue_name, free)
                if not self.message_cache:
                    self.broker.client.blpop([self.broker.wake_key(self.queue_name)], timeout=self.timeout / 1000)
                    return None
            message = Message.decode(self.message_cache.pop(0))
            self.queued_message_ids.add(message.message_id)
            return MessageProxy(message)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
