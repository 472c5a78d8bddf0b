"""Seams that make the local cloud's queues and server-side copies behave as AWS's do.

Applied inside the main moto server process, after `s3_events.install()` (the copy timing wraps its
conditional copy, so the sleep happens before the check and outside its lock):

* **Atomic queues.** moto 5.2.5's `Queue.delete_message` rebuilds the queue's message list without
  the queue's lock while `add_message` appends under it, so a message sent during a delete can vanish
  (a standalone race lost 14 of 800 sends). Every operation that reads or rewrites a queue's message
  list (send, receive, delete, change visibility, purge) now holds the queue's own lock. It is the
  re-entrant lock inside moto's `Condition`, so a long poll's wait still releases it for senders.
* **Short polls sample.** SQS short polling (`WaitTimeSeconds=0`, and no queue default) asks only a
  weighted random subset of its servers, so a reply may hold fewer messages than the queue has, or
  none at all. Each message lives on one of `SERVERS` imaginary servers (a seeded hash of its id); a
  short poll asks a seeded random subset of them. Long polls ask every server, as on AWS.
* **A cheap clock.** moto's SQS checks every queued message's visibility through a datetime-based
  clock on each SendMessage (it builds all queue attributes to read one flag), so a send costs
  O(queue depth) at ~4 us per message; a float clock makes that about 7x cheaper.
* **Copies take time.** CopyObject and UploadPartCopy sleep `bytes / rate` before copying, outside
  every lock, so a large copy takes the time a real server-side copy takes and time budgets are
  exercised. The rate is per destination bucket when set so, else the default.

Settings come from the environment when the process starts (`SAMPLE_SEED_VARIABLE`,
`COPY_RATE_VARIABLE`) and from `POST /_crr/seams` at any time (`configure`).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import moto.sqs.models as sqs_models
from moto.s3.responses import S3Response
from moto.sqs.models import Queue, SQSBackend

# Sampling: each short poll asks every server with this probability; messages spread over SERVERS.
SERVERS = 5
SERVER_SAMPLE_PROBABILITY = 0.6
SAMPLE_SEED_VARIABLE = "CRR_LOCAL_SQS_SAMPLE_SEED"
DEFAULT_SAMPLE_SEED = 12
# Server-side copies: bytes per second (1 GiB/s keeps the suite's megabyte-sized copies instant).
COPY_RATE_VARIABLE = "CRR_LOCAL_COPY_BYTES_PER_SECOND"
DEFAULT_COPY_BYTES_PER_SECOND = 1024**3


class _Settings:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sampling = True
        self.seed = int(os.environ.get(SAMPLE_SEED_VARIABLE, DEFAULT_SAMPLE_SEED))
        self.rng = random.Random(self.seed)
        self.copy_bytes_per_second = float(os.environ.get(COPY_RATE_VARIABLE, DEFAULT_COPY_BYTES_PER_SECOND))
        self.copy_rate_by_bucket: dict[str, float] = {}

    def servers_asked(self) -> frozenset[int]:
        with self.lock:
            return frozenset(server for server in range(SERVERS) if self.rng.random() < SERVER_SAMPLE_PROBABILITY)

    def server_of(self, message_id: str) -> int:
        digest = hashlib.sha256(f"{self.seed}:{message_id}".encode()).digest()
        return digest[0] % SERVERS

    def copy_seconds(self, bucket: str, size: int) -> float:
        with self.lock:
            rate = self.copy_rate_by_bucket.get(bucket, self.copy_bytes_per_second)
        return size / rate if rate > 0 else 0.0


_settings = _Settings()
_installed = False


class _PollState(threading.local):
    def __init__(self) -> None:
        self.asked: frozenset[int] | None = None  # None: every server (a long poll, or no sampling)


_poll = _PollState()


def configure(document: Mapping[str, Any]) -> dict[str, Any]:
    """Change the seams' settings; returns them all. Keys: `short_poll_sampling` (bool), `seed` (int),
    `copy_bytes_per_second` (float, 0 = instant), `copy_bytes_per_second_by_bucket` ({bucket: float},
    replacing the previous overrides)."""
    with _settings.lock:
        if "short_poll_sampling" in document:
            _settings.sampling = bool(document["short_poll_sampling"])
        if "seed" in document:
            _settings.seed = int(document["seed"])
            _settings.rng = random.Random(_settings.seed)
        if "copy_bytes_per_second" in document:
            _settings.copy_bytes_per_second = float(document["copy_bytes_per_second"])
        if "copy_bytes_per_second_by_bucket" in document:
            overrides = document["copy_bytes_per_second_by_bucket"] or {}
            _settings.copy_rate_by_bucket = {str(bucket): float(rate) for bucket, rate in overrides.items()}
        return {
            "short_poll_sampling": _settings.sampling,
            "seed": _settings.seed,
            "copy_bytes_per_second": _settings.copy_bytes_per_second,
            "copy_bytes_per_second_by_bucket": dict(_settings.copy_rate_by_bucket),
        }


# ------------------------------------------------------------------ SQS


def _under_queue_lock(method: Callable[..., Any]) -> Callable[..., Any]:
    """A `Queue` method run while holding that queue's lock."""

    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._messages_lock:
            return method(self, *args, **kwargs)

    return locked


def _backend_under_queue_lock(method: Callable[..., Any]) -> Callable[..., Any]:
    """An `SQSBackend` method taking the queue name first, run while holding that queue's lock."""

    def locked(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return method(self, queue_name, *args, **kwargs)

    return locked


def _sampled_receive(method: Callable[..., Any]) -> Callable[..., Any]:
    def receive_message(
        self: Any, queue_name: str, count: int, wait_seconds_timeout: int, *args: Any, **kwargs: Any
    ) -> Any:
        short = int(wait_seconds_timeout or 0) == 0
        _poll.asked = _settings.servers_asked() if short and _settings.sampling else None
        try:
            with self.get_queue(queue_name)._messages_lock:
                return method(self, queue_name, count, wait_seconds_timeout, *args, **kwargs)
        finally:
            _poll.asked = None

    return receive_message


def _visible_messages(original: property) -> property:
    """`Queue.messages` (the visible ones), limited to the servers a short poll asked."""
    getter = original.fget
    if getter is None:
        raise TypeError("Queue.messages has no getter")

    def messages(self: Any) -> list[Any]:
        visible: list[Any] = getter(self)
        asked = _poll.asked
        if asked is None:
            return visible
        return [message for message in visible if _settings.server_of(message.id) in asked]

    return property(messages)


def _fast_unix_time_millis(original: Callable[..., float]) -> Callable[..., float]:
    def unix_time_millis(dt: Any = None) -> float:
        return original(dt) if dt is not None else time.time() * 1000.0

    return unix_time_millis


# ------------------------------------------------------------------ S3 copies


def _source_size(response: Any) -> int:
    """Bytes the request copies: the copy-source range, else the whole source version."""
    span = str(response.headers.get("x-amz-copy-source-range", "")).removeprefix("bytes=")
    first, dash, last = span.partition("-")
    if dash and first.isdigit() and last.isdigit():
        return int(last) - int(first) + 1
    source = str(response.headers.get("x-amz-copy-source", ""))
    parsed = urlparse(source)
    bucket, _, key = unquote(parsed.path).lstrip("/").partition("/")
    version = parse_qs(parsed.query).get("versionId", [None])[0]
    try:
        found = response.backend.get_object(bucket, key, version_id=version)
    except Exception:  # noqa: BLE001 - moto raises its own errors for a missing source; the copy reports them
        return 0
    return int(getattr(found, "size", 0) or 0)


def _timed_copy(method: Callable[..., Any]) -> Callable[..., Any]:
    def copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        delay = _settings.copy_seconds(self.bucket_name, _source_size(self))
        if delay > 0:
            time.sleep(delay)
        return method(self, *args, **kwargs)

    return copy


def install() -> None:
    """Patch moto's SQS and S3 copies in this process (idempotent; after `s3_events.install()`)."""
    global _installed  # noqa: PLW0603 - process-wide patch state
    if _installed:
        return
    for name in ("add_message", "delete_message"):
        setattr(Queue, name, _under_queue_lock(getattr(Queue, name)))
    setattr(Queue, "messages", _visible_messages(Queue.__dict__["messages"]))  # noqa: B010
    for name in ("change_message_visibility", "purge_queue"):
        setattr(SQSBackend, name, _backend_under_queue_lock(getattr(SQSBackend, name)))
    setattr(SQSBackend, "receive_message", _sampled_receive(SQSBackend.receive_message))  # noqa: B010
    setattr(sqs_models, "unix_time_millis", _fast_unix_time_millis(getattr(sqs_models, "unix_time_millis")))  # noqa: B009, B010
    for name in ("copy_object", "upload_part_copy"):
        setattr(S3Response, name, _timed_copy(getattr(S3Response, name)))
    _installed = True
