"""The latency model: AWS's network round trips, added where a client waits for them.

On 127.0.0.1 every request answers in a few milliseconds of the emulator's CPU; on AWS the same
request also waits a round trip: ~10 ms inside a region, ~60-80 ms to another one. A bench without
that wait measures the emulator, not what a deployed stack achieves. This module adds the wait.

A `LatencyModel` gives a round-trip time per class of request: **same** (the request's target region
is the caller's own) or **cross** (another region). The target region is the region the request is
signed for: for S3 that is the bucket's region (the local cloud refuses a request signed for another
region, and botocore retries it in the right one, so an accepted request is always signed for its
bucket's region); for every other service it is the client's region. A server with one region
(SeaweedFS) names its far side instead: `cross_buckets`, and then only the bucket decides (the
benches' clients sign for the rule's nominal regions there).

The wait happens in the caller, per HTTP attempt (a retry is another round trip): half the round trip
before the request is sent, half after its answer arrives (botocore's ``before-send`` and
``response-received`` events), as the request and the answer each cross the network once. Sleeping
in the caller releases the GIL, so the emulator serves other callers meanwhile, as AWS would; a sleep
inside the GIL-bound moto server would instead serialise callers behind one another.

- `install(target, model, home_region)` adds the wait to one boto3 client or session (a session's
  later clients inherit it): the SeaweedFS benches and the local cloud's SQS poller use it.
- `install_from_environment()` adds it to every client a Lambda worker creates, when the worker
  starts with ``CRR_LOCAL_LATENCY=same=10,cross=60``; the home region is the worker's
  ``AWS_REGION``. With ``CRR_LOCAL_LATENCY_COUNTS=<directory>`` each worker also keeps its counts in
  ``<directory>/<pid>.json``, which `counts_in(directory)` adds up (a seam of ours, not of moto, as
  `faults` is).

Counts are by class and ``<service>:<operation>`` (one per attempt), so a bench can print how many
requests waited how long, and a test can tell which calls crossed regions.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import botocore.session

LATENCY_VARIABLE = "CRR_LOCAL_LATENCY"
COUNTS_VARIABLE = "CRR_LOCAL_LATENCY_COUNTS"
SAME: Literal["same"] = "same"
CROSS: Literal["cross"] = "cross"
RequestClass = Literal["same", "cross"]
# Where the hook keeps, in botocore's per-request context, what it decided before the request left.
_CONTEXT_KEY = "crr_latency"


@dataclass(frozen=True)
class LatencyModel:
    """A fixed round-trip time per class of request, in milliseconds; `cross_buckets` marks the far
    side on a one-region server (every S3 call on those buckets is cross-region)."""

    same_region_ms: float
    cross_region_ms: float
    cross_buckets: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.same_region_ms < 0 or self.cross_region_ms < 0:
            raise ValueError("a round-trip time cannot be negative")

    @classmethod
    def parse(cls, text: str, cross_buckets: frozenset[str] = frozenset()) -> LatencyModel:
        """`SAME,CROSS` (``10,60``) or the environment's form (``same=10,cross=60``), milliseconds.

        Raises ValueError for anything else."""
        values: dict[str, float] = {}
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 2:
            raise ValueError(f"latency {text!r} is not SAME,CROSS in milliseconds (e.g. 10,60)")
        for position, part in enumerate(parts):
            name, _, value = part.rpartition("=")
            name = name.strip() or (SAME, CROSS)[position]
            if name not in (SAME, CROSS) or name in values:
                raise ValueError(f"latency {text!r} is not same=MS,cross=MS")
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"latency {text!r}: {value!r} is not a number of milliseconds") from None
        return cls(values[SAME], values[CROSS], cross_buckets)

    def environment_value(self) -> str:
        """The value of ``CRR_LOCAL_LATENCY`` that gives a worker this model (not `cross_buckets`:
        the local cloud knows its buckets' regions)."""
        return f"same={self.same_region_ms:g},cross={self.cross_region_ms:g}"

    def round_trip_seconds(self, request_class: RequestClass) -> float:
        return (self.same_region_ms if request_class == SAME else self.cross_region_ms) / 1000


class LatencyHook:
    """Waits a modelled round trip around each HTTP attempt of the clients it is installed on, and
    counts the attempts by class and ``<service>:<operation>``.

    `sleep` is injectable so a test can record the waits instead of spending them; `on_count` is told
    the counts after each attempt (a worker persists them there).
    """

    def __init__(
        self,
        model: LatencyModel,
        home_region: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_count: Callable[[Mapping[str, Mapping[str, int]]], None] | None = None,
    ) -> None:
        self.model = model
        self.home_region = home_region
        self._sleep = sleep
        self._on_count = on_count
        self._counts: dict[RequestClass, Counter[str]] = {SAME: Counter(), CROSS: Counter()}
        self._lock = threading.Lock()

    def classify(self, region: str | None, bucket: str | None) -> RequestClass:
        """Whether a request signed for `region` (on `bucket`, for S3) crosses regions. With
        `cross_buckets` (a one-region server, whose clients sign for nominal regions) only the bucket counts."""
        if self.model.cross_buckets:
            return CROSS if bucket in self.model.cross_buckets else SAME
        return SAME if region in (None, self.home_region) else CROSS

    def counts(self) -> dict[str, dict[str, int]]:
        """Attempts delayed so far: ``{"same": {"<service>:<operation>": n}, "cross": {...}}``."""
        with self._lock:
            return {request_class: dict(counter) for request_class, counter in self._counts.items()}

    def remember_bucket(self, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        """``before-parameter-build``: the call's bucket, before serialisation hides it in the URL."""
        bucket = params.get("Bucket")
        context[_CONTEXT_KEY] = {"bucket": bucket if isinstance(bucket, str) else None}

    def before_send(self, request: Any, event_name: str, **_: Any) -> None:
        """``before-send``: the request's half of the round trip; decides and remembers its class."""
        context: dict[str, Any] = request.context
        state = context.setdefault(_CONTEXT_KEY, {"bucket": None})
        region = (context.get("signing") or {}).get("region") or context.get("client_region")
        state["class"] = self.classify(region, state.get("bucket"))
        state["operation"] = _operation_of(event_name)
        self._sleep(self.model.round_trip_seconds(state["class"]) / 2)

    def after_response(self, context: Mapping[str, Any], **_: Any) -> None:
        """``response-received``: the answer's half of the round trip, then the attempt is counted."""
        state = context.get(_CONTEXT_KEY) or {}
        request_class: RequestClass | None = state.get("class")
        if request_class is None:  # another before-send handler answered without sending anything
            return
        self._sleep(self.model.round_trip_seconds(request_class) / 2)
        with self._lock:
            self._counts[request_class][state["operation"]] += 1
            snapshot: dict[str, dict[str, int]] = {name: dict(counter) for name, counter in self._counts.items()}
        if self._on_count is not None:
            self._on_count(snapshot)


def _operation_of(event_name: str) -> str:
    """``before-send.s3.CopyObject`` -> ``s3:CopyObject``."""
    _, service, operation = event_name.split(".", 2)
    return f"{service}:{operation}"


def install(target: Any, model: LatencyModel, home_region: str, **options: Any) -> LatencyHook:
    """Add the model's waits to a boto3 client, or to a boto3 (or botocore) session, whose clients
    created afterwards inherit them; returns the hook, which counts what it delayed. `options` go to
    `LatencyHook` (`sleep`, `on_count`)."""
    hook = LatencyHook(model, home_region, **options)
    register_on(_events_of(target), hook)
    return hook


def register_on(events: Any, hook: LatencyHook) -> None:
    """Register `hook`'s handlers on a botocore event emitter (a client's or a session's)."""
    events.register("before-parameter-build.s3", hook.remember_bucket)
    events.register("before-send", hook.before_send)
    events.register("response-received", hook.after_response)


def _events_of(target: Any) -> Any:
    if hasattr(target, "meta"):  # a client
        return target.meta.events
    botocore_session = getattr(target, "_session", target)  # a boto3 session wraps a botocore one
    return botocore_session.get_component("event_emitter")


def install_from_environment() -> LatencyHook | None:
    """In a Lambda worker: add the waits of ``CRR_LOCAL_LATENCY`` to every botocore client this process
    creates, the worker's ``AWS_REGION`` being home. Returns the hook, or None when the variable is unset.

    Raises ValueError when the variable is malformed (the worker's init then fails, loudly)."""
    text = os.environ.get(LATENCY_VARIABLE)
    if not text:
        return None
    counts_dir = os.environ.get(COUNTS_VARIABLE)
    on_count = _CountsFile(Path(counts_dir) / f"{os.getpid()}.json").write if counts_dir else None
    hook = LatencyHook(LatencyModel.parse(text), os.environ.get("AWS_REGION", ""), on_count=on_count)
    original = botocore.session.Session.create_client

    # Every client, whichever boto3 or botocore session the function's code creates it from.
    def create_client(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        register_on(client.meta.events, hook)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    return hook


class _CountsFile:
    """One worker's counts, replaced whole at each write so a reader never sees half a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            partial = self._path.with_suffix(".partial")
            partial.write_text(json.dumps(counts), encoding="utf-8")
            partial.replace(self._path)


def counts_in(directory: Path) -> dict[str, dict[str, int]]:
    """The attempts every worker writing into `directory` delayed, added up by class and
    ``<service>:<operation>``."""
    total: dict[str, Counter[str]] = {SAME: Counter(), CROSS: Counter()}
    for path in sorted(directory.glob("*.json")):
        for request_class, operations in json.loads(path.read_text(encoding="utf-8")).items():
            total.setdefault(request_class, Counter()).update(operations)
    return {request_class: dict(counter) for request_class, counter in total.items()}


def summary(counts: Mapping[str, Mapping[str, int]], model: LatencyModel) -> str:
    """One line for a bench: how many attempts waited, per class, and for how long in all."""
    parts = []
    for request_class in (SAME, CROSS):
        attempts = sum(counts.get(request_class, {}).values())
        waited = attempts * model.round_trip_seconds(request_class)
        parts.append(
            f"{attempts} {request_class}-region attempts x {model.round_trip_seconds(request_class) * 1000:g} ms "
            f"({waited:.1f} s)"
        )
    return "latency model: " + ", ".join(parts)
