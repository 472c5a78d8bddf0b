"""The contract the property-test proofs rely on: ``FakeS3`` behaves as crr's real S3 adapter does.

The proofs of the Replicator (seeded interleavings over ``tests.support.fakes.FakeS3``) are only as
good as the fake. Each check here runs twice, against the fake and against ``S3ObjectStore`` on a real
S3 server (SeaweedFS), through the same ``ObjectStore`` calls crr makes: HEAD of a missing key or a
delete marker, copies pinned by ETag and version, a copy of a vanished source, deletes (idempotent,
conditional), metadata, content type and tags carried, and the version listing a two-way delete reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlencode

import pytest

from crr.adapters.clients import ClientFactory
from crr.adapters.s3 import S3ObjectStore
from crr.errors import DestinationChangedError, SourceChangedError, SourceGoneError
from crr.models import CopyRequest, ObjectState
from crr.ports.objects import ObjectStore
from tests.support.fakes import FakeS3
from tests.support.seaweedfs import SeaweedFS

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-1", "us-east-1"


class Users(Protocol):
    """What the users of the buckets do (outside crr), and what a test reads back."""

    def bucket(self, *, versioned: bool) -> str: ...

    def put(self, bucket: str, key: str, body: bytes, metadata: dict[str, str], tags: dict[str, str]) -> None: ...

    def remove(self, bucket: str, key: str) -> None: ...

    def body(self, bucket: str, key: str) -> bytes | None: ...

    def tags(self, bucket: str, key: str) -> dict[str, str]: ...


@dataclass
class FakeUsers:
    s3: FakeS3

    def bucket(self, *, versioned: bool) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(name, WEST, versioned=versioned)
        return name

    def put(self, bucket: str, key: str, body: bytes, metadata: dict[str, str], tags: dict[str, str]) -> None:
        self.s3.put(bucket, key, body, metadata=metadata, tags=tags, content_type="text/plain")

    def remove(self, bucket: str, key: str) -> None:
        self.s3.remove(bucket, key)

    def body(self, bucket: str, key: str) -> bytes | None:
        found = self.s3.current(bucket, key)
        return None if found is None else found.body

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        found = self.s3.current(bucket, key)
        assert found is not None
        return dict(found.tags)


@dataclass
class SeaweedFSUsers:
    server: SeaweedFS

    def bucket(self, *, versioned: bool) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.server.create_bucket(name, versioned=versioned)
        return name

    def put(self, bucket: str, key: str, body: bytes, metadata: dict[str, str], tags: dict[str, str]) -> None:
        self.server.client().put_object(
            Bucket=bucket, Key=key, Body=body, Metadata=metadata, Tagging=urlencode(tags), ContentType="text/plain"
        )

    def remove(self, bucket: str, key: str) -> None:
        self.server.client().delete_object(Bucket=bucket, Key=key)

    def body(self, bucket: str, key: str) -> bytes | None:
        s3 = self.server.client()
        try:
            found: Any = s3.get_object(Bucket=bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            return None
        return bytes(found["Body"].read())

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        tag_set = self.server.client().get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        return {tag["Key"]: tag["Value"] for tag in tag_set}


@dataclass
class World:
    store: ObjectStore
    users: Users

    def copy_request(self, source: str, destination: str, state: ObjectState, **changes: Any) -> CopyRequest:
        return CopyRequest(
            source_bucket=source,
            source_region=WEST,
            destination_bucket=destination,
            destination_region=EAST,
            state=state,
            metadata={**state.metadata, "crr-origin-bucket": source},
            storage_class=None,
            grants=None,
            **changes,
        )

    def head(self, bucket: str, key: str) -> ObjectState:
        state = self.store.head(bucket, WEST, key)
        assert state is not None, f"{bucket}/{key} should exist"
        return state


@pytest.fixture(params=["FakeS3", "S3ObjectStore on SeaweedFS"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if request.param == "FakeS3":
        fake = FakeS3()
        yield World(fake, FakeUsers(fake))
    else:
        # Only the real half starts the server, so the fake's half runs without it.
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        yield World(S3ObjectStore(ClientFactory(session=server.session())), SeaweedFSUsers(server))


@pytest.mark.parametrize("versioned", [False, True])
def test_head_of_a_missing_key_or_a_deleted_one_is_none(world: World, versioned: bool) -> None:
    # Given a bucket with one key written and then deleted by a user
    bucket = world.users.bucket(versioned=versioned)
    world.users.put(bucket, "gone", b"x", {}, {})
    world.users.remove(bucket, "gone")
    # When crr heads a key that never existed and the deleted one (a delete marker when versioned)
    # Then neither exists for crr
    assert world.store.head(bucket, WEST, "never") is None
    assert world.store.head(bucket, WEST, "gone") is None


def test_head_reports_size_etag_metadata_content_type_and_version(world: World) -> None:
    # Given an object in a versioned bucket and one in an unversioned bucket
    versioned, plain = world.users.bucket(versioned=True), world.users.bucket(versioned=False)
    world.users.put(versioned, "k", b"hello", {"owner": "ana"}, {})
    world.users.put(plain, "k", b"hello", {}, {})
    # When crr heads them
    found, unversioned = world.head(versioned, "k"), world.head(plain, "k")
    # Then it sees the size, the quoted MD5 ETag, the user metadata and content type, and a version
    # id only where the bucket keeps versions
    assert (found.size, found.etag) == (5, '"5d41402abc4b2a76b9719d911017c592"')
    assert (found.metadata, found.content_type) == ({"owner": "ana"}, "text/plain")
    assert found.version_id is not None
    assert unversioned.version_id is None


def test_a_copy_carries_bytes_metadata_content_type_and_tags(world: World) -> None:
    # Given a source object with metadata and tags
    source, destination = world.users.bucket(versioned=True), world.users.bucket(versioned=False)
    world.users.put(source, "doc", b"payload", {"owner": "ana"}, {"team": "x", "tier": "gold"})
    state = world.head(source, "doc")
    # When crr copies it with its marker
    etag = world.store.copy(world.copy_request(source, destination, state))
    # Then the replica has the bytes, the ETag, the metadata plus the marker, the content type and the tags
    replica = world.head(destination, "doc")
    assert world.users.body(destination, "doc") == b"payload"
    # (S3 quotes the ETag in CopyObjectResult; SeaweedFS 4.48 does not, so compare it unquoted)
    assert etag.strip('"') == replica.etag.strip('"') == state.etag.strip('"')
    assert replica.etag == state.etag
    assert replica.metadata == {"owner": "ana", "crr-origin-bucket": source}
    assert replica.content_type == "text/plain"
    assert world.users.tags(destination, "doc") == {"team": "x", "tier": "gold"}


@pytest.mark.parametrize("versioned", [False, True])
def test_a_copy_of_a_source_overwritten_since_its_head_is_refused(world: World, versioned: bool) -> None:
    # Given a source read by crr, then overwritten by a user
    source, destination = world.users.bucket(versioned=versioned), world.users.bucket(versioned=False)
    world.users.put(source, "k", b"old", {}, {})
    stale = world.head(source, "k")
    world.users.put(source, "k", b"new", {}, {})
    if versioned:
        # When crr copies the version it read, Then it gets exactly that version
        world.store.copy(world.copy_request(source, destination, stale))
        assert world.users.body(destination, "k") == b"old"
        # And a request whose ETag does not match the pinned version is refused (precondition failed)
        mismatched = replace(stale, etag=world.head(source, "k").etag)
        with pytest.raises(SourceChangedError):
            world.store.copy(world.copy_request(source, destination, mismatched))
    else:
        # When crr copies with the ETag it read, Then the copy is refused (precondition failed)
        with pytest.raises(SourceChangedError):
            world.store.copy(world.copy_request(source, destination, stale))
        assert world.users.body(destination, "k") is None


@pytest.mark.parametrize("versioned", [False, True])
def test_a_copy_of_a_source_deleted_since_its_head_says_it_is_gone(world: World, versioned: bool) -> None:
    # Given a source read by crr, then deleted by a user
    source, destination = world.users.bucket(versioned=versioned), world.users.bucket(versioned=False)
    world.users.put(source, "k", b"x", {}, {})
    state = world.head(source, "k")
    world.users.remove(source, "k")
    current = replace(state, version_id=None)
    # When crr copies the current object, Then it learns the source is gone
    with pytest.raises(SourceGoneError):
        world.store.copy(world.copy_request(source, destination, current))
    assert world.users.body(destination, "k") is None


def test_deletes_are_idempotent(world: World) -> None:
    # Given a replica bucket with one object
    bucket = world.users.bucket(versioned=False)
    world.users.put(bucket, "k", b"x", {}, {})
    # When crr deletes it twice, and deletes a key that never existed
    world.store.delete(bucket, EAST, "k")
    world.store.delete(bucket, EAST, "k")
    world.store.delete(bucket, EAST, "never")
    # Then none of them fails and the object is gone
    assert world.store.head(bucket, EAST, "k") is None


def test_a_delete_on_a_versioned_bucket_leaves_a_marker_listed_first(world: World) -> None:
    # Given a versioned bucket with two versions of a key
    bucket = world.users.bucket(versioned=True)
    world.users.put(bucket, "k", b"1", {}, {})
    world.users.put(bucket, "k", b"2", {}, {})
    # When crr deletes it
    marker = world.store.delete(bucket, WEST, "k")
    # Then the delete made a marker, listed first (newest) before the two versions
    assert marker is not None
    listed = world.store.recent_versions(bucket, WEST, "k", 10)
    assert [version.is_delete_marker for version in listed] == [True, False, False]
    assert listed[0].version_id == marker


def test_a_conditional_delete_of_a_changed_object_is_refused(world: World) -> None:
    # Given a replica crr read, then overwritten
    bucket = world.users.bucket(versioned=False)
    world.users.put(bucket, "k", b"mine", {}, {})
    read = world.head(bucket, "k")
    world.users.put(bucket, "k", b"theirs", {}, {})
    # When crr deletes it only if it is still what it read, Then the delete is refused
    with pytest.raises(DestinationChangedError):
        world.store.delete(bucket, EAST, "k", if_etag=read.etag)
    assert world.users.body(bucket, "k") == b"theirs"


def test_a_copy_conditional_on_the_destination_is_refused_when_it_changed(world: World) -> None:
    # Given a source, and a replica a user overwrote after crr read it
    source, destination = world.users.bucket(versioned=False), world.users.bucket(versioned=False)
    world.users.put(source, "k", b"source", {}, {})
    world.users.put(destination, "k", b"first", {}, {})
    read = world.head(destination, "k")
    world.users.put(destination, "k", b"second", {}, {})
    state = world.head(source, "k")
    # When crr copies only over the replica it read, or only where the key is absent
    # Then both copies are refused and the user's write stays
    with pytest.raises(DestinationChangedError):
        world.store.copy(world.copy_request(source, destination, state, destination_etag=read.etag))
    with pytest.raises(DestinationChangedError):
        world.store.copy(world.copy_request(source, destination, state, destination_absent=True))
    assert world.users.body(destination, "k") == b"second"


def test_tags_are_read_and_written_per_version(world: World) -> None:
    # Given two versions of a key, the older tagged
    bucket = world.users.bucket(versioned=True)
    world.users.put(bucket, "k", b"1", {}, {"v": "one"})
    older = world.head(bucket, "k").version_id
    world.users.put(bucket, "k", b"2", {}, {})
    assert older is not None
    # When crr retags the older version
    world.store.put_tags(bucket, WEST, "k", older, {"v": "retagged"})
    # Then that version carries the new tags and the current one is untouched
    assert world.store.tags(bucket, WEST, "k", older) == {"v": "retagged"}
    assert world.store.tags(bucket, WEST, "k", None) == {}
