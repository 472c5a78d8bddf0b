"""The S3 adapter over moto: what a replica carries, and how S3 errors are translated."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory
from crr.adapters.s3 import S3ObjectStore
from crr.adapters.s3_buckets import DestinationEncryption, S3Buckets
from crr.errors import BucketMissingError, SourceGoneError, StorageError, UnknownBucketError
from crr.markers import marker_for, sealed_origin, user_metadata
from crr.models import AclGrants, CopyRequest, ObjectState
from tests.support.aws import client, create_bucket, upload_in_parts

SRC, DST = "src-bucket", "dst-bucket"


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def s3(aws: None) -> Any:
    return client("s3", "us-west-1")


def copy_request(state: ObjectState, store: S3ObjectStore, metadata: dict[str, str] | None = None) -> CopyRequest:
    grants = store.acl_grants(
        bucket=SRC,
        region="us-west-1",
        destination_bucket=DST,
        destination_region="us-east-1",
        key=state.key,
        version_id=state.version_id,
    )
    return CopyRequest(SRC, "us-west-1", DST, "us-east-1", state, metadata or state.metadata, None, grants)


def test_a_copy_carries_content_headers_metadata_and_tags(s3: Any) -> None:
    # Given a versioned source object with every replicated header, metadata and tags
    create_bucket(s3, SRC, "us-west-1", versioned=True)
    create_bucket(client("s3", "us-east-1"), DST, "us-east-1")
    s3.put_object(
        Bucket=SRC,
        Key="a b/c+d.txt",
        Body=b"payload",
        ContentType="text/csv",
        CacheControl="max-age=60",
        ContentDisposition="attachment",
        ContentEncoding="identity",
        ContentLanguage="de",
        Metadata={"owner": "ana"},
        Tagging="team=x&tier=gold",
    )
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, "us-west-1", "a b/c+d.txt")
    assert state is not None
    assert state.version_id is not None
    # When it is copied with the replica marker
    store.copy(copy_request(state, store, {**state.metadata, "crr-origin-bucket": SRC}))
    # Then the replica has the same bytes, headers, metadata (plus marker) and tags
    replica = client("s3", "us-east-1").get_object(Bucket=DST, Key="a b/c+d.txt")
    assert replica["Body"].read() == b"payload"
    assert (replica["ContentType"], replica["CacheControl"], replica["ContentDisposition"]) == (
        "text/csv",
        "max-age=60",
        "attachment",
    )
    assert (replica["ContentEncoding"], replica["ContentLanguage"]) == ("identity", "de")
    assert replica["Metadata"] == {"owner": "ana", "crr-origin-bucket": SRC}
    tags = client("s3", "us-east-1").get_object_tagging(Bucket=DST, Key="a b/c+d.txt")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("team", "x"), ("tier", "gold")]


def test_acl_grants_are_copied_when_both_buckets_use_acls(s3: Any) -> None:
    create_bucket(s3, SRC, "us-west-1", acls=True)
    create_bucket(client("s3", "us-east-1"), DST, "us-east-1", acls=True)
    s3.put_object(Bucket=SRC, Key="public.txt", Body=b"x", ACL="public-read")
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, "us-west-1", "public.txt")
    assert state is not None
    store.copy(copy_request(state, store))
    grants = client("s3", "us-east-1").get_object_acl(Bucket=DST, Key="public.txt")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") and g["Permission"] == "READ" for g in grants)


def test_no_acl_request_is_made_when_acls_are_disabled(s3: Any) -> None:
    create_bucket(s3, SRC, "us-west-1")
    create_bucket(client("s3", "us-east-1"), DST, "us-east-1")
    store = S3ObjectStore(ClientFactory())
    assert (
        store.acl_grants(
            bucket=SRC,
            region="us-west-1",
            destination_bucket=DST,
            destination_region="us-east-1",
            key="k",
            version_id=None,
        )
        is None
    )


def test_head_of_a_missing_key_or_a_delete_marker_is_none(s3: Any) -> None:
    create_bucket(s3, SRC, "us-west-1", versioned=True)
    s3.put_object(Bucket=SRC, Key="gone", Body=b"x")
    s3.delete_object(Bucket=SRC, Key="gone")
    store = S3ObjectStore(ClientFactory())
    assert store.head(SRC, "us-west-1", "gone") is None
    assert store.head(SRC, "us-west-1", "never") is None


def test_copying_a_vanished_source_raises_source_gone(s3: Any) -> None:
    create_bucket(s3, SRC, "us-west-1")
    create_bucket(client("s3", "us-east-1"), DST, "us-east-1")
    s3.put_object(Bucket=SRC, Key="k", Body=b"x")
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, "us-west-1", "k")
    assert state is not None
    s3.delete_object(Bucket=SRC, Key="k")
    with pytest.raises(SourceGoneError):
        store.copy(copy_request(state, store))


def test_a_missing_destination_bucket_is_reported_as_such(s3: Any) -> None:
    create_bucket(s3, SRC, "us-west-1")
    s3.put_object(Bucket=SRC, Key="k", Body=b"x")
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, "us-west-1", "k")
    assert state is not None
    request = CopyRequest(SRC, "us-west-1", "no-such-bucket", "us-east-1", state, {}, None, None)
    with pytest.raises(BucketMissingError, match="no-such-bucket"):
        store.copy(request)


def test_bucket_regions_are_looked_up_and_unknown_buckets_named(s3: Any) -> None:
    create_bucket(s3, SRC, "us-west-1")
    create_bucket(client("s3", "us-east-1"), DST, "us-east-1")
    buckets = S3Buckets(ClientFactory(), "us-west-1")
    assert (buckets.region_of(SRC), buckets.region_of(DST)) == ("us-west-1", "us-east-1")
    with pytest.raises(UnknownBucketError, match="'ghost-bucket' does not exist"):
        buckets.region_of("ghost-bucket")


def test_a_kms_source_is_re_encrypted_with_the_replica_key_and_others_take_the_destinations_default(
    s3: Any,
) -> None:
    # Given SSE-KMS, DSSE-KMS and SSE-S3 objects in the source, and a destination whose default is SSE-KMS
    create_bucket(s3, SRC, "us-west-1")
    east = client("s3", "us-east-1")
    create_bucket(east, DST, "us-east-1")
    source_key = client("kms", "us-west-1").create_key()["KeyMetadata"]["Arn"]
    replica_key, default_key = (client("kms", "us-east-1").create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    east.put_bucket_encryption(
        Bucket=DST,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": default_key},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    for key, algorithm in (("secret", "aws:kms"), ("dual", "aws:kms:dsse")):
        s3.put_object(Bucket=SRC, Key=key, Body=b"s", ServerSideEncryption=algorithm, SSEKMSKeyId=source_key)
    s3.put_object(Bucket=SRC, Key="plain", Body=b"p", ServerSideEncryption="AES256")
    store = S3ObjectStore(ClientFactory())
    # When each is copied (the replicator names the replica key, and its algorithm, only for KMS sources)
    for key in ("secret", "dual", "plain"):
        state = store.head(SRC, "us-west-1", key)
        assert state is not None
        request = copy_request(state, store)
        if state.kms_encrypted:
            request = replace(request, replica_kms_key_arn=replica_key, replica_encryption=state.server_side_encryption)
        store.copy(request)
    # Then the KMS replicas keep their algorithm under the replica key (moto reports the key of SSE-KMS only)
    secret = east.head_object(Bucket=DST, Key="secret")
    assert (secret["ServerSideEncryption"], secret["SSEKMSKeyId"]) == ("aws:kms", replica_key)
    assert east.head_object(Bucket=DST, Key="dual")["ServerSideEncryption"] == "aws:kms:dsse"
    # And the SSE-S3 one takes the destination's default instead of forcing SSE-S3 over it
    plain = east.head_object(Bucket=DST, Key="plain")
    assert (plain["ServerSideEncryption"], plain["SSEKMSKeyId"]) == ("aws:kms", default_key)


def test_an_expires_that_is_not_an_http_date_is_left_off_the_replica(s3: Any) -> None:
    # Given a source whose Expires header is not a date (S3 stores any string there)
    create_bucket(s3, SRC, "us-west-1")
    create_bucket(client("s3", "us-east-1"), DST, "us-east-1")
    s3.put_object(Bucket=SRC, Key="k", Body=b"x")
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, "us-west-1", "k")
    assert state is not None
    # When it is copied
    store.copy(copy_request(replace(state, expires="never"), store))
    # Then the replica is written, without Expires, rather than failing on every retry
    replica = client("s3", "us-east-1").head_object(Bucket=DST, Key="k")
    assert "ExpiresString" not in replica
    assert replica["ContentLength"] == 1


MIB = 1024 * 1024


def test_a_multipart_source_is_copied_in_its_own_layout_with_full_fidelity(s3: Any) -> None:
    from crr.part_planning import plan_parts

    # Given a source uploaded in three parts, with headers, metadata and tags
    create_bucket(s3, SRC, "us-west-1", versioned=True)
    east = client("s3", "us-east-1")
    create_bucket(east, DST, "us-east-1")
    etag = upload_in_parts(
        s3,
        SRC,
        "big.bin",
        [5 * MIB, 5 * MIB, 1234],
        ContentType="application/x-tar",
        CacheControl="no-store",
        Metadata={"owner": "ana"},
        Tagging="tier=gold",
    )
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, "us-west-1", "big.bin")
    assert state is not None
    assert state.parts_count == 3
    # When its layout is read and it is copied in parts
    layout = store.part_sizes(SRC, "us-west-1", state)
    store.multipart_copy(copy_request(state, store), plan_parts(state.size, layout))
    # Then the replica has the same bytes, ETag, headers, metadata and tags
    replica = east.get_object(Bucket=DST, Key="big.bin")
    assert layout == [5 * MIB, 5 * MIB, 1234]
    assert replica["ETag"] == etag
    assert replica["Body"].read() == bytes([1]) * 5 * MIB + bytes([2]) * 5 * MIB + bytes([3]) * 1234
    assert (replica["ContentType"], replica["CacheControl"], replica["Metadata"]) == (
        "application/x-tar",
        "no-store",
        {"owner": "ana"},
    )
    assert east.get_object_tagging(Bucket=DST, Key="big.bin")["TagSet"] == [{"Key": "tier", "Value": "gold"}]


def test_acl_grants_survive_a_multipart_copy(s3: Any) -> None:
    # SeaweedFS ignores grant headers on CreateMultipartUpload, so its test
    # (seaweedfs/test_multipart_copy.py) checks the request crr sends; moto applies them, so the
    # replica's grants are checked here.
    from crr.part_planning import plan_parts

    # Given buckets that use ACLs and a multipart source readable by everyone
    create_bucket(s3, SRC, "us-west-1", acls=True)
    east = client("s3", "us-east-1")
    create_bucket(east, DST, "us-east-1", acls=True)
    upload_in_parts(s3, SRC, "shared.bin", [5 * MIB, 1234])
    s3.put_object_acl(Bucket=SRC, Key="shared.bin", ACL="public-read")
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, "us-west-1", "shared.bin")
    assert state is not None
    # When it is copied in parts
    store.multipart_copy(copy_request(state, store), plan_parts(state.size, store.part_sizes(SRC, "us-west-1", state)))
    # Then the replica grants what the source grants
    assert _grants(east, DST, "shared.bin") == _grants(s3, SRC, "shared.bin")
    assert ("READ", "http://acs.amazonaws.com/groups/global/AllUsers") in _grants(east, DST, "shared.bin")


def _grants(s3: Any, bucket: str, key: str) -> set[tuple[str, str]]:
    found = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    return {(grant["Permission"], grant["Grantee"].get("URI") or grant["Grantee"].get("ID", "")) for grant in found}


def test_a_failed_part_aborts_the_upload(s3: Any) -> None:
    from unittest.mock import patch

    from botocore.exceptions import ClientError

    from crr.part_planning import plan_parts

    # Given a multipart source and a destination that fails the second part copy
    create_bucket(s3, SRC, "us-west-1")
    east = client("s3", "us-east-1")
    create_bucket(east, DST, "us-east-1")
    upload_in_parts(s3, SRC, "big.bin", [5 * MIB, 5 * MIB])
    clients = ClientFactory()
    store = S3ObjectStore(clients)
    state = store.head(SRC, "us-west-1", "big.bin")
    assert state is not None
    destination = clients.client("s3", "us-east-1")
    original = destination.upload_part_copy

    def fail_second(**params: Any) -> Any:
        if params["PartNumber"] == 2:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "UploadPartCopy")
        return original(**params)

    # When the copy runs, Then it fails with the S3 error and no incomplete upload is left
    with patch.object(destination, "upload_part_copy", side_effect=fail_second), pytest.raises(StorageError):
        store.multipart_copy(copy_request(state, store), plan_parts(state.size, [5 * MIB, 5 * MIB]))
    assert east.list_multipart_uploads(Bucket=DST).get("Uploads", []) == []
    assert "Contents" not in east.list_objects_v2(Bucket=DST)


class _DeniedEncryptionLookups:
    """An S3 client whose GetBucketEncryption is refused, as for a role without s3:GetEncryptionConfiguration."""

    def __init__(self) -> None:
        self.calls = 0

    def get_bucket_encryption(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "GetBucketEncryption")


class _Clients:
    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def client(self, service: str, region: str) -> Any:
        return self._s3


def test_a_destination_default_that_cannot_be_read_is_left_to_s3_and_not_asked_again() -> None:
    # Given a role that may not read the destination's default encryption
    s3 = _DeniedEncryptionLookups()
    encryption = DestinationEncryption(_Clients(s3))  # type: ignore[arg-type]
    # When replicas are written twice
    first, second = (encryption.headers(DST, "us-east-1") for _ in range(2))
    # Then no encryption is stated (S3 applies the default), and the refusal is remembered
    assert first == second == {}
    assert s3.calls == 1


def test_a_replica_written_with_crrs_marker_is_recognised_and_a_users_copy_of_it_is_not(s3: Any) -> None:
    # Given an object replicated with crr's marker into a versioned destination (as S3 reports it back)
    create_bucket(s3, SRC, "us-west-1", versioned=True)
    east = client("s3", "us-east-1")
    create_bucket(east, DST, "us-east-1", versioned=True)
    s3.put_object(Bucket=SRC, Key="k", Body=b"x", ContentType="text/plain", Metadata={"owner": "ana"})
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, "us-west-1", "k")
    assert state is not None
    written = store.copy_version(copy_request(state, store, {**user_metadata(state), **marker_for(state, SRC, now())}))
    # When a user copies it inside the destination, to another key and onto itself with new metadata
    east.copy_object(Bucket=DST, Key="copy", CopySource={"Bucket": DST, "Key": "k"})
    replica = store.head(DST, "us-east-1", "k")
    assert replica is not None
    east.copy_object(
        Bucket=DST, Key="k", CopySource={"Bucket": DST, "Key": "k"},
        MetadataDirective="REPLACE", Metadata={**replica.metadata, "mtime": "1"},
    )  # fmt: skip
    # Then the replica crr wrote (as its copy answered: that version) was recognised, and neither copy is
    assert (sealed_origin(replica), replica.version_id) == (SRC, written.version_id)
    copied, touched = store.head(DST, "us-east-1", "copy"), store.head(DST, "us-east-1", "k")
    assert copied is not None
    assert touched is not None
    assert (sealed_origin(copied), sealed_origin(touched)) == (None, None)


def test_tags_and_acls_are_read_and_set_per_version(s3: Any) -> None:
    # Given a versioned object with tags
    create_bucket(s3, SRC, "us-west-1", versioned=True)
    version = s3.put_object(Bucket=SRC, Key="k", Body=b"x", Tagging="a=1")["VersionId"]
    store = S3ObjectStore(ClientFactory())
    # When its tags are read, replaced, then cleared, and its ACL set
    before = store.tags(SRC, "us-west-1", "k", version)
    store.put_tags(SRC, "us-west-1", "k", version, {"b": "2"})
    replaced = store.tags(SRC, "us-west-1", "k", version)
    store.put_tags(SRC, "us-west-1", "k", version, {})
    cleared = store.tags(SRC, "us-west-1", "k", None)
    store.put_acl(
        SRC, "us-west-1", "k", version, AclGrants(read='uri="http://acs.amazonaws.com/groups/global/AllUsers"')
    )
    # Then each read shows the last write, and the ACL grants read to all users
    assert (before, replaced, cleared) == ({"a": "1"}, {"b": "2"}, {})
    grants = s3.get_object_acl(Bucket=SRC, Key="k", VersionId=version)["Grants"]
    assert any(grant["Grantee"].get("URI", "").endswith("AllUsers") for grant in grants)


def test_a_full_object_checksum_is_read_with_its_algorithm(s3: Any) -> None:
    # Given an object uploaded with a SHA-256 checksum, and one without any
    create_bucket(s3, SRC, "us-west-1")
    s3.put_object(Bucket=SRC, Key="summed", Body=b"x", ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket=SRC, Key="plain", Body=b"x")
    store = S3ObjectStore(ClientFactory())
    # When their checksums are read
    summed, plain = store.checksum(SRC, "us-west-1", "summed"), store.checksum(SRC, "us-west-1", "plain")
    # Then the first names its algorithm and value, and a missing key has none
    assert summed == "SHA256:LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE="
    assert plain is None or plain.startswith(("CRC64NVME:", "CRC32:"))
    assert store.checksum(SRC, "us-west-1", "missing") is None
