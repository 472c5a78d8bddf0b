"""Parity: the local cloud's S3 answers encryption, ETags, regions and notification filters as AWS does
(the seams of crr_cli.localcloud.seams.s3_fidelity)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from crr_cli.localcloud.clients import LOCAL_ACCESS_KEY_ID, LOCAL_CLIENT_CONFIG, LOCAL_SECRET_ACCESS_KEY
from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.scenario import create_bucket

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-1", "us-east-1"


def _bucket(cloud: LocalCloud, region: str, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    create_bucket(cloud.client("s3", region), name, region)
    return name


def _md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def test_objects_in_buckets_without_a_kms_default_report_sse_s3(local_cloud: LocalCloud) -> None:
    """Since January 5, 2023 S3 encrypts every new object with SSE-S3 unless the request or the bucket's
    default says otherwise, and reports it in the `x-amz-server-side-encryption` response header.

    AWS: "Setting default server-side encryption behavior for Amazon S3 buckets",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-encryption.html, and "Default encryption
    FAQ", https://docs.aws.amazon.com/AmazonS3/latest/userguide/default-encryption-faq.html
    """
    # Given a bucket with no default encryption configured
    s3 = local_cloud.client("s3", WEST)
    bucket = _bucket(local_cloud, WEST, "par-sse")
    # When an object is written without encryption headers, and another is copied from it
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"})
    # Then PUT, HEAD and GET say SSE-S3, for the copy too
    assert put["ServerSideEncryption"] == "AES256"
    assert s3.head_object(Bucket=bucket, Key="k")["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="k")["ServerSideEncryption"] == "AES256"
    assert s3.head_object(Bucket=bucket, Key="copy")["ServerSideEncryption"] == "AES256"


@pytest.mark.parametrize("algorithm", ["aws:kms", "aws:kms:dsse"])
def test_kms_encrypted_objects_have_etags_that_are_not_the_md5_and_differ_per_write(
    local_cloud: LocalCloud, algorithm: str
) -> None:
    """Objects created by PUT, POST or Copy and encrypted by SSE-KMS (or SSE-C) have ETags that are not
    an MD5 digest of their data; multipart ETags never are. An SSE-S3 object's ETag is its MD5.

    AWS: "Object" (Amazon S3 API Reference, data types, ETag),
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html
    """
    # Given a KMS key and a bucket whose default is SSE-KMS with it
    s3 = local_cloud.client("s3", WEST)
    key_arn = local_cloud.client("kms", WEST).create_key()["KeyMetadata"]["Arn"]
    bucket = _bucket(local_cloud, WEST, "par-etag")
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": algorithm, "KMSMasterKeyID": key_arn}}]
        },
    )
    data = b"same bytes"
    # When the same bytes are written twice, copied once, and uploaded in one part
    first = s3.put_object(Bucket=bucket, Key="a", Body=data)["ETag"]
    second = s3.put_object(Bucket=bucket, Key="a", Body=data)["ETag"]
    copied = s3.copy_object(Bucket=bucket, Key="b", CopySource={"Bucket": bucket, "Key": "a"})
    upload = s3.create_multipart_upload(Bucket=bucket, Key="c")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="c", UploadId=upload, PartNumber=1, Body=data)["ETag"]
    completed = s3.complete_multipart_upload(
        Bucket=bucket, Key="c", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]}
    )["ETag"]
    # Then no ETag is the MD5 of the bytes, and each write has its own
    etags = {first, second, copied["CopyObjectResult"]["ETag"], completed}
    assert _md5(data) not in etags
    assert len(etags) == 4
    assert completed.strip('"').endswith("-1")
    head = s3.head_object(Bucket=bucket, Key="a")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == (algorithm, key_arn)
    # And an SSE-S3 object's ETag stays the MD5 of its bytes
    plain = _bucket(local_cloud, WEST, "par-etag-plain")
    assert s3.put_object(Bucket=plain, Key="a", Body=data)["ETag"] == _md5(data)


def _require_kms_policy(bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyObjectsThatAreNotSSEKMS",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                    "Condition": {"Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "true"}},
                },
                {
                    "Sid": "DenyIncorrectEncryptionHeader",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                    "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
                },
            ],
        }
    )


def test_a_bucket_policy_requiring_sse_kms_refuses_every_other_write(local_cloud: LocalCloud) -> None:
    """A bucket policy can deny s3:PutObject to requests without the
    `x-amz-server-side-encryption-aws-kms-key-id` header (Null condition) or whose
    `x-amz-server-side-encryption` is not `aws:kms` (StringNotEquals): the conditions read the request's
    headers, not the bucket's default, and apply to PutObject, CopyObject and CreateMultipartUpload.

    AWS: "Using server-side encryption with AWS KMS keys (SSE-KMS)", section "Requiring SSE-KMS for all
    objects written to a bucket", https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html,
    and "Amazon S3 condition key examples",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html
    """
    # Given a bucket whose default is SSE-KMS and whose policy requires SSE-KMS with a named key
    s3 = local_cloud.client("s3", EAST)
    key_arn = local_cloud.client("kms", EAST).create_key()["KeyMetadata"]["Arn"]
    bucket = _bucket(local_cloud, EAST, "par-policy")
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}}]
        },
    )
    s3.put_bucket_policy(Bucket=bucket, Policy=_require_kms_policy(bucket))
    source = _bucket(local_cloud, EAST, "par-policy-src")
    s3.put_object(Bucket=source, Key="k", Body=b"x")
    # When writes come without headers, with SSE-S3, by copy, and as a multipart upload without headers
    refused: list[Callable[[], Any]] = [
        lambda: s3.put_object(Bucket=bucket, Key="none", Body=b"x"),
        lambda: s3.put_object(Bucket=bucket, Key="aes", Body=b"x", ServerSideEncryption="AES256"),
        lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": source, "Key": "k"}),
        lambda: s3.create_multipart_upload(Bucket=bucket, Key="mpu"),
    ]
    # Then each is AccessDenied
    for write in refused:
        with pytest.raises(ClientError) as denied:
            write()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
        assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # And writes naming SSE-KMS and a key are accepted, by PUT, copy and multipart upload alike
    s3.put_object(Bucket=bucket, Key="kms", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn)
    s3.copy_object(
        Bucket=bucket,
        Key="copy",
        CopySource={"Bucket": source, "Key": "k"},
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_arn,
    )
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mpu", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn)
    part = s3.upload_part_copy(
        Bucket=bucket, Key="mpu", UploadId=upload["UploadId"], PartNumber=1, CopySource={"Bucket": source, "Key": "k"}
    )["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mpu",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]},
    )
    assert s3.head_object(Bucket=bucket, Key="mpu")["SSEKMSKeyId"] == key_arn


def _fresh_client(cloud: LocalCloud, region: str) -> Any:
    """An S3 client of its own (boto3 remembers a bucket's region per client once redirected)."""
    return boto3.session.Session().client(
        "s3",
        region_name=region,
        endpoint_url=cloud.endpoint_url,
        aws_access_key_id=LOCAL_ACCESS_KEY_ID,
        aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
        config=LOCAL_CLIENT_CONFIG,
    )


def _first_answers(client: Any) -> list[dict[str, Any]]:
    """What S3 answered before boto3's region redirector retried (one entry per attempt)."""
    seen: list[dict[str, Any]] = []

    def record(response: Any = None, **_: Any) -> None:
        if response is not None:
            seen.append(
                {
                    "status": response[0].status_code,
                    "code": response[1].get("Error", {}).get("Code"),
                    "region": response[1].get("Error", {}).get("Region"),
                    "header": response[0].headers.get("x-amz-bucket-region"),
                }
            )

    client.meta.events.register_first("needs-retry.s3", record)
    return seen


def test_a_request_signed_for_another_region_is_refused_and_names_the_buckets_region(
    local_cloud: LocalCloud,
) -> None:
    """S3 refuses a request signed for another region than the bucket's with 400
    AuthorizationHeaderMalformed, naming the expected Region (a HEAD, having no body, gets a bare 400 with
    the `x-amz-bucket-region` header); the AWS SDKs then retry in the bucket's region. GetBucketLocation
    answers from any region.

    AWS: "Error responses" (Amazon S3 API Reference, AuthorizationHeaderMalformed),
    https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html, "HeadBucket" (x-amz-bucket-region),
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html, and "GetBucketLocation",
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html
    """
    # Given a bucket in us-west-1 holding a key, and a fresh client configured for us-east-1
    bucket = _bucket(local_cloud, WEST, "par-region")
    local_cloud.client("s3", WEST).put_object(Bucket=bucket, Key="k", Body=b"x")
    wrong = _fresh_client(local_cloud, EAST)
    answers = _first_answers(wrong)
    misses = local_cloud.region_misses()
    # When it GETs and HEADs the key, and asks where the bucket is
    body = wrong.get_object(Bucket=bucket, Key="k")["Body"].read()
    other = _bucket(local_cloud, WEST, "par-region-head")
    location = wrong.get_bucket_location(Bucket=other)["LocationConstraint"]
    # Then the first GET was refused with the bucket's region, and boto3's retry in that region succeeded
    assert answers[0] == {"status": 400, "code": "AuthorizationHeaderMalformed", "region": WEST, "header": WEST}
    assert body == b"x"
    assert location == WEST
    assert local_cloud.region_misses() == misses + 1
    # And a HEAD to another bucket from a fresh client gets a bare 400 carrying the region header
    fresh = _fresh_client(local_cloud, EAST)
    head_answers = _first_answers(fresh)
    local_cloud.client("s3", WEST).put_object(Bucket=other, Key="k", Body=b"y")
    assert fresh.head_object(Bucket=other, Key="k")["ContentLength"] == 1
    assert head_answers[0] == {"status": 400, "code": "400", "region": None, "header": WEST}


def test_notification_filters_match_the_form_url_encoded_key(
    local_cloud: LocalCloud, eventually: Callable[..., Any]
) -> None:
    """S3 event records carry the key form-URL-encoded (a space as `+`), and prefix/suffix filter rules are
    matched against that form: a filter value with special characters must be written URL-encoded.

    AWS: "Event notification message structure",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html, and
    "Configuring event notifications using object key name filtering",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-how-to-filtering.html
    """
    # Given a bucket notifying one queue for the raw prefix "my dir/" and another for its encoded form
    s3, sqs = local_cloud.client("s3", WEST), local_cloud.client("sqs", WEST)
    bucket = _bucket(local_cloud, WEST, "par-filter")
    queues = {}
    for name in ("raw", "encoded"):
        url = sqs.create_queue(QueueName=f"par-filter-{name}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queues[name] = (url, arn)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": name,
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
                for name, prefix in (("raw", "my dir/"), ("encoded", "my+dir/caf%C3%A9"))
                for arn in [queues[name][1]]
            ]
        },
    )
    # When a key with a space and a non-ASCII character is written
    s3.put_object(Bucket=bucket, Key="my dir/café/a b.txt", Body=b"x")

    # Then only the encoded filter fires, and its record carries the encoded key
    def received(url: str) -> list[str]:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        return [record["s3"]["object"]["key"] for m in messages for record in json.loads(m["Body"]).get("Records", [])]

    keys = eventually(lambda: received(queues["encoded"][0]), what="the encoded filter's record")
    assert keys == ["my+dir/caf%C3%A9/a+b.txt"]
    assert received(queues["raw"][0]) == []


def test_a_listing_in_url_encoding_encodes_the_start_after_and_delimiter_it_echoes(local_cloud: LocalCloud) -> None:
    """With `encoding-type=url` ListObjectsV2 returns the `Delimiter`, `Prefix`, `Key` and `StartAfter`
    elements URL-encoded, so a key (or a StartAfter) holding a character XML 1.0 cannot carry, such as a
    control character, still makes a readable answer; botocore asks for it and decodes it.

    AWS: "ListObjectsV2" (Amazon S3 API Reference), EncodingType,
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html
    """
    # Given keys around one that holds a control character
    s3 = local_cloud.client("s3", WEST)
    bucket = _bucket(local_cloud, WEST, "par-list")
    for key in ("k/\x01", "k/\x18x", "k/zz"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    # When a listing starts after a key with control characters, with a delimiter (as a backfill probes
    # for a key between two others)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="k/", StartAfter="k/\x18\x19", Delimiter="\x02", MaxKeys=1)
    # Then the answer is readable: the next key in UTF-8 byte order, and the StartAfter and Delimiter asked
    # for, once botocore has decoded them
    assert [item["Key"] for item in listed["Contents"]] == ["k/\x18x"]
    assert (listed["StartAfter"], listed["Delimiter"]) == ("k/\x18\x19", "\x02")
