"""Multipart copy on a real S3 server (SeaweedFS): fidelity, same ETag, overwrite safety, abort on failure.

moto ignores ``CopySourceIfMatch``, so what happens when a source changes in the middle of a copy can
only be shown on a server that honours it. Objects are 20-30 MiB in parts of 5-7 MiB, so the whole
module stays within a few seconds. The source and destination buckets live on the one server; their
regions are nominal (SeaweedFS has one region and accepts any in a signature).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from crr.adapters.clients import ClientFactory
from crr.adapters.s3 import S3ObjectStore
from crr.errors import SourceChangedError, SourceGoneError
from crr.events import ChangeEvent, ChangeKind
from crr.markers import MARKER_ORIGIN_BUCKET, user_metadata
from crr.models import CopyRequest, ObjectState
from crr.part_planning import MIB, plan_parts
from crr.replication import Outcome, Replicator
from tests.support.fakes import FakeLedger, FakeProgress, FakeRules
from tests.support.rules import make_rule
from tests.support.seaweedfs import SeaweedFS

pytestmark = pytest.mark.integration

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"
# An irregular layout (S3 allows any part of at least 5 MiB but the last), so "same boundaries" is visible.
LAYOUT = (5 * MIB, 7 * MIB, 5 * MIB, 6 * MIB, 3 * MIB)
HEADERS = {
    "ContentType": "video/mp4",
    "CacheControl": "max-age=60",
    "ContentDisposition": 'attachment; filename="clip.mp4"',
    "ContentEncoding": "identity",
    "ContentLanguage": "de",
}
USER_METADATA = {"owner": "ana", "project": "north-star"}
TAGS = {"team": "media", "tier": "gold standard"}
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


@dataclass(frozen=True)
class Buckets:
    source: str
    destination: str


@pytest.fixture
def buckets(seaweedfs: SeaweedFS) -> Buckets:
    """A fresh, unversioned source and destination bucket for one test."""
    suffix = uuid.uuid4().hex[:12]
    made = Buckets(source=f"src-{suffix}", destination=f"dst-{suffix}")
    seaweedfs.create_bucket(made.source)
    seaweedfs.create_bucket(made.destination)
    return made


@pytest.fixture
def clients(seaweedfs: SeaweedFS) -> ClientFactory:
    """crr's own client factory, its sessions pointed at SeaweedFS."""
    return ClientFactory(session=seaweedfs.session())


@pytest.fixture
def store(clients: ClientFactory) -> S3ObjectStore:
    return S3ObjectStore(clients)


# ---- helpers ------------------------------------------------------------------------------------


def upload_in_parts(s3: Any, bucket: str, key: str, body: bytes, layout: tuple[int, ...] = LAYOUT) -> str:
    """Upload ``body`` with ``layout``'s part sizes (and every header, metadata and tags); returns the ETag."""
    assert sum(layout) == len(body)
    upload = s3.create_multipart_upload(
        Bucket=bucket,
        Key=key,
        Metadata=USER_METADATA,
        Tagging=urlencode(TAGS),
        **HEADERS,
    )["UploadId"]
    parts, start = [], 0
    for number, size in enumerate(layout, start=1):
        sent = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body[start : start + size]
        )
        parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        start += size
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    return str(done["ETag"])


def body_digest(s3: Any, bucket: str, key: str) -> str:
    return hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def part_layout(s3: Any, bucket: str, key: str) -> list[int]:
    """The part sizes the server reports for an object (GetObjectAttributes, not crr's HEAD per part)."""
    found = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["ObjectParts"])
    return [part["Size"] for part in found["ObjectParts"]["Parts"]]


def tags_of(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def incomplete_uploads(s3: Any, bucket: str) -> list[str]:
    return [upload["Key"] for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return True


def copy_request(buckets: Buckets, state: ObjectState, store: S3ObjectStore) -> CopyRequest:
    """What the Replicator asks for: the source's metadata plus crr's replica marker."""
    grants = store.acl_grants(
        bucket=buckets.source,
        region=SOURCE_REGION,
        destination_bucket=buckets.destination,
        destination_region=DESTINATION_REGION,
        key=state.key,
        version_id=state.version_id,
    )
    return CopyRequest(
        source_bucket=buckets.source,
        source_region=SOURCE_REGION,
        destination_bucket=buckets.destination,
        destination_region=DESTINATION_REGION,
        state=state,
        metadata={**user_metadata(state), MARKER_ORIGIN_BUCKET: buckets.source},
        storage_class=None,
        grants=grants,
    )


def copy_in_source_layout(store: S3ObjectStore, buckets: Buckets, key: str) -> str:
    """The adapter path the Replicator takes for a multipart source: HEAD, part sizes, plan, copy."""
    state = store.head(buckets.source, SOURCE_REGION, key)
    assert state is not None
    layout = store.part_sizes(buckets.source, SOURCE_REGION, state)
    return store.multipart_copy(copy_request(buckets, state, store), plan_parts(state.size, layout, 5 * MIB))


def replicator_for(buckets: Buckets, store: S3ObjectStore) -> Replicator:
    rule = make_rule(
        rule_id="seaweedfs",
        source_bucket=buckets.source,
        source_region=SOURCE_REGION,
        destination_bucket=buckets.destination,
        destination_region=DESTINATION_REGION,
    )
    return Replicator(FakeRules(rule), store, FakeLedger(), FakeProgress())


def created(buckets: Buckets, key: str, sequencer: str = "0A") -> ChangeEvent:
    return ChangeEvent(
        bucket=buckets.source,
        key=key,
        kind=ChangeKind.CREATED,
        event_name="ObjectCreated:CompleteMultipartUpload",
        event_time=datetime.now(UTC),
        sequencer=sequencer,
    )


class AfterFirstPart:
    """Interrupts a multipart copy between its parts, deterministically.

    Hooks crr's destination client: part 1's UploadPartCopy runs alone and completes, then ``action``
    runs (it overwrites or deletes the source), and only then are the other parts sent. Fires once, so
    a retry of the whole copy runs undisturbed.
    """

    def __init__(self, client: Any, action: Callable[[], object]) -> None:
        self._action = action
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.fired = False
        client.meta.events.register("before-parameter-build.s3.UploadPartCopy", self._before)
        client.meta.events.register("after-call.s3.UploadPartCopy", self._after)

    def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["part_number"] = params["PartNumber"]
        if params["PartNumber"] != 1 and not self._released.wait(timeout=30):
            raise AssertionError("part 1 never completed, so the interruption never ran")

    def _after(self, context: dict[str, Any], **_: Any) -> None:
        with self._lock:
            if context.get("part_number") != 1 or self.fired:
                return
            self.fired = True
        try:
            self._action()
        finally:
            self._released.set()


@pytest.fixture
def interrupt(clients: ClientFactory) -> Iterator[Callable[[Callable[[], object]], AfterFirstPart]]:
    """``interrupt(action)``: run ``action`` after part 1 of the next multipart copy crr makes."""
    installed: list[AfterFirstPart] = []

    def install(action: Callable[[], object]) -> AfterFirstPart:
        installed.append(AfterFirstPart(clients.client("s3", DESTINATION_REGION), action))
        return installed[-1]

    yield install
    assert all(hook.fired for hook in installed), "an interruption was installed but the copy never reached it"


# ---- fidelity -----------------------------------------------------------------------------------


def test_a_multipart_copy_carries_bytes_headers_metadata_and_tags(
    seaweedfs: SeaweedFS, buckets: Buckets, store: S3ObjectStore
) -> None:
    # Given a 26 MiB source uploaded in parts, with content headers, user metadata and tags
    s3 = seaweedfs.client()
    upload_in_parts(s3, buckets.source, "media/clip one.mp4", os.urandom(sum(LAYOUT)))
    # When crr copies it in parts
    copy_in_source_layout(store, buckets, "media/clip one.mp4")
    # Then the replica has the same bytes, content headers, user metadata (plus crr's marker) and tags
    replica = s3.head_object(Bucket=buckets.destination, Key="media/clip one.mp4")
    assert body_digest(s3, buckets.destination, "media/clip one.mp4") == body_digest(
        s3, buckets.source, "media/clip one.mp4"
    )
    assert {name: replica.get(name) for name in HEADERS} == HEADERS
    assert replica["Metadata"] == {**USER_METADATA, MARKER_ORIGIN_BUCKET: buckets.source}
    assert tags_of(s3, buckets.destination, "media/clip one.mp4") == TAGS


def test_the_replica_of_a_multipart_source_has_its_part_layout_and_its_etag(
    seaweedfs: SeaweedFS, buckets: Buckets, store: S3ObjectStore
) -> None:
    # Given a source uploaded in five parts of uneven sizes
    s3 = seaweedfs.client()
    source_etag = upload_in_parts(s3, buckets.source, "layout.bin", os.urandom(sum(LAYOUT)))
    # When crr copies it in parts
    returned = copy_in_source_layout(store, buckets, "layout.bin")
    # Then the replica has the same part boundaries, so the same "<md5 of md5s>-5" ETag
    assert part_layout(s3, buckets.destination, "layout.bin") == list(LAYOUT)
    assert source_etag.endswith('-5"')
    assert s3.head_object(Bucket=buckets.destination, Key="layout.bin")["ETag"] == source_etag
    assert returned == source_etag


def test_the_replicator_makes_a_multipart_source_indistinguishable_from_its_replica(
    seaweedfs: SeaweedFS, buckets: Buckets, store: S3ObjectStore
) -> None:
    # Given a multipart source and a rule replicating its bucket
    s3 = seaweedfs.client()
    source_etag = upload_in_parts(s3, buckets.source, "report.pdf", os.urandom(sum(LAYOUT)))
    replicator = replicator_for(buckets, store)
    # When the Replicator applies the object's creation
    result = replicator.apply(created(buckets, "report.pdf"))
    # Then it copied every byte and the replica matches the source in ETag, headers, metadata and tags
    assert (result.outcome, result.bytes_copied) == (Outcome.COPIED, sum(LAYOUT))
    replica = s3.head_object(Bucket=buckets.destination, Key="report.pdf")
    assert replica["ETag"] == source_etag
    assert body_digest(s3, buckets.destination, "report.pdf") == body_digest(s3, buckets.source, "report.pdf")
    assert {name: replica.get(name) for name in HEADERS} == HEADERS
    assert {k: v for k, v in replica["Metadata"].items() if not k.startswith("crr-")} == USER_METADATA
    assert replica["Metadata"][MARKER_ORIGIN_BUCKET] == buckets.source
    assert tags_of(s3, buckets.destination, "report.pdf") == TAGS


def test_a_multipart_copy_asks_for_the_sources_acl_grants(
    seaweedfs: SeaweedFS, store: S3ObjectStore, clients: ClientFactory
) -> None:
    # SeaweedFS ignores x-amz-grant-* (and x-amz-acl) on CreateMultipartUpload, so a replica made here
    # keeps only the owner's grant: this test checks the request crr sends, and
    # tests/unit/test_s3_adapter.py::test_acl_grants_survive_a_multipart_copy (moto applies the grants)
    # checks that the replica carries them.
    # Given buckets with ACLs enabled and a multipart source readable by everyone
    suffix = uuid.uuid4().hex[:12]
    buckets = Buckets(source=f"src-acl-{suffix}", destination=f"dst-acl-{suffix}")
    seaweedfs.create_bucket(buckets.source, acls=True)
    seaweedfs.create_bucket(buckets.destination, acls=True)
    s3 = seaweedfs.client()
    source_etag = upload_in_parts(s3, buckets.source, "shared.bin", os.urandom(sum(LAYOUT)))
    s3.put_object_acl(Bucket=buckets.source, Key="shared.bin", ACL="public-read")
    source_grants = _grants(s3, buckets.source, "shared.bin")
    created_with: list[dict[str, Any]] = []
    clients.client("s3", DESTINATION_REGION).meta.events.register(
        "before-parameter-build.s3.CreateMultipartUpload", lambda params, **_: created_with.append(dict(params))
    )
    # When crr copies it in parts
    copy_in_source_layout(store, buckets, "shared.bin")
    # Then crr created exactly one upload, asking in it for each of the source's grants (as read from
    # the server) and for no canned ACL, which would replace them
    [created] = created_with
    assert source_grants == {("READ", ALL_USERS), ("FULL_CONTROL", "crr")}
    assert created["GrantRead"] == f'uri="{ALL_USERS}"'
    assert created["GrantFullControl"] == 'id="crr"'
    assert "ACL" not in created
    # And the server completed that upload into the replica
    assert s3.head_object(Bucket=buckets.destination, Key="shared.bin")["ETag"] == source_etag


def _grants(s3: Any, bucket: str, key: str) -> set[tuple[str, str]]:
    found = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    return {(g["Permission"], g["Grantee"].get("URI") or g["Grantee"].get("ID", "")) for g in found}


# ---- an overwrite during the copy -----------------------------------------------------------------


def test_an_overwrite_during_a_multipart_copy_fails_it_cleanly(
    seaweedfs: SeaweedFS,
    buckets: Buckets,
    store: S3ObjectStore,
    interrupt: Callable[[Callable[[], object]], AfterFirstPart],
) -> None:
    # Given a multipart source that is overwritten right after the copy's first part was copied
    s3 = seaweedfs.client()
    upload_in_parts(s3, buckets.source, "moving.bin", os.urandom(sum(LAYOUT)))
    interrupt(lambda: upload_in_parts(s3, buckets.source, "moving.bin", os.urandom(sum(LAYOUT))))
    # When crr copies it in parts, every part pinned to the ETag its HEAD saw
    with pytest.raises(SourceChangedError):
        copy_in_source_layout(store, buckets, "moving.bin")
    # Then no replica was written (so none mixes old and new parts) and no upload was left behind
    assert not exists(s3, buckets.destination, "moving.bin")
    assert incomplete_uploads(s3, buckets.destination) == []


def test_an_overwrite_during_a_pinned_copy_of_a_versioned_source_yields_only_the_old_version(
    seaweedfs: SeaweedFS, store: S3ObjectStore, interrupt: Callable[[Callable[[], object]], AfterFirstPart]
) -> None:
    # Given a versioned multipart source that is overwritten right after the copy's first part was copied
    suffix = uuid.uuid4().hex[:12]
    buckets = Buckets(source=f"src-ver-{suffix}", destination=f"dst-ver-{suffix}")
    seaweedfs.create_bucket(buckets.source, versioned=True)
    seaweedfs.create_bucket(buckets.destination)
    s3 = seaweedfs.client()
    old = os.urandom(sum(LAYOUT))
    old_etag = upload_in_parts(s3, buckets.source, "moving.bin", old)
    interrupt(lambda: upload_in_parts(s3, buckets.source, "moving.bin", os.urandom(sum(LAYOUT))))
    # When crr copies it in parts, pinned to the version its HEAD saw
    copy_in_source_layout(store, buckets, "moving.bin")
    # Then the replica is the old version, whole: its bytes and ETag, none of the new one's
    assert s3.head_object(Bucket=buckets.destination, Key="moving.bin")["ETag"] == old_etag
    assert body_digest(s3, buckets.destination, "moving.bin") == hashlib.sha256(old).hexdigest()
    assert incomplete_uploads(s3, buckets.destination) == []


def test_the_replicator_copies_the_newer_version_whole_after_an_overwrite_during_its_copy(
    seaweedfs: SeaweedFS,
    buckets: Buckets,
    store: S3ObjectStore,
    interrupt: Callable[[Callable[[], object]], AfterFirstPart],
) -> None:
    # Given a multipart source overwritten (in another layout) right after crr copied the first part
    s3 = seaweedfs.client()
    upload_in_parts(s3, buckets.source, "moving.bin", os.urandom(sum(LAYOUT)))
    newer = os.urandom(30 * MIB)
    newer_etag: list[str] = []
    interrupt(lambda: newer_etag.append(upload_in_parts(s3, buckets.source, "moving.bin", newer, (10 * MIB,) * 3)))
    replicator = replicator_for(buckets, store)
    # When the Replicator applies the creation event
    result = replicator.apply(created(buckets, "moving.bin"))
    # Then the failed copy was retried from a fresh HEAD, and the replica is the newer version, whole
    assert result.outcome is Outcome.COPIED
    assert result.bytes_copied == len(newer)
    assert s3.head_object(Bucket=buckets.destination, Key="moving.bin")["ETag"] == newer_etag[0]
    assert body_digest(s3, buckets.destination, "moving.bin") == hashlib.sha256(newer).hexdigest()
    assert incomplete_uploads(s3, buckets.destination) == []


# ---- failures mid-copy ---------------------------------------------------------------------------


def test_a_source_deleted_during_a_multipart_copy_aborts_the_upload(
    seaweedfs: SeaweedFS,
    buckets: Buckets,
    store: S3ObjectStore,
    interrupt: Callable[[Callable[[], object]], AfterFirstPart],
) -> None:
    # Given a multipart source deleted right after the copy's first part was copied
    s3 = seaweedfs.client()
    upload_in_parts(s3, buckets.source, "gone.bin", os.urandom(sum(LAYOUT)))
    interrupt(lambda: s3.delete_object(Bucket=buckets.source, Key="gone.bin"))
    # When crr copies it in parts
    with pytest.raises(SourceGoneError):
        copy_in_source_layout(store, buckets, "gone.bin")
    # Then the upload was aborted: nothing is listed as in progress and no replica exists
    assert incomplete_uploads(s3, buckets.destination) == []
    assert not exists(s3, buckets.destination, "gone.bin")


def test_a_connection_lost_during_a_multipart_copy_aborts_the_upload(
    seaweedfs: SeaweedFS,
    buckets: Buckets,
    store: S3ObjectStore,
    clients: ClientFactory,
) -> None:
    # Given a multipart source, and a destination connection that breaks on the third part
    s3 = seaweedfs.client()
    upload_in_parts(s3, buckets.source, "cut.bin", os.urandom(sum(LAYOUT)))

    def break_third_part(params: dict[str, Any], **_: Any) -> None:
        if params["PartNumber"] == 3:
            raise EndpointConnectionError(endpoint_url=seaweedfs.endpoint_url)

    clients.client("s3", DESTINATION_REGION).meta.events.register(
        "before-parameter-build.s3.UploadPartCopy", break_third_part
    )
    # When crr copies it in parts
    with pytest.raises(EndpointConnectionError):
        copy_in_source_layout(store, buckets, "cut.bin")
    # Then the parts already copied were discarded with the upload, and no replica exists
    assert incomplete_uploads(s3, buckets.destination) == []
    assert not exists(s3, buckets.destination, "cut.bin")
