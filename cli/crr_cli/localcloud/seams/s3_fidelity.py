"""S3 as AWS answers it, where moto is kinder: seams installed in the main moto process.

Each seam closes one difference that would hide a failure crr meets on AWS (tests/parity/test_parity_s3.py
checks each against the AWS documentation it follows):

* **Default encryption.** Since January 2023 S3 encrypts every new object with SSE-S3 when its bucket has
  no other default, and HEAD/GET/PUT answer `x-amz-server-side-encryption: AES256`; moto reports nothing.
* **ETags of SSE-KMS / DSSE-KMS objects** are not the MD5 of their bytes and differ per write (PUT,
  CopyObject, CompleteMultipartUpload alike; a multipart ETag keeps its `-N` suffix); moto gives the MD5.
* **Bucket policies that require SSE-KMS.** moto evaluates a bucket policy's conditions without the
  request's values, so a Deny with a condition refuses every write, or none. Here the documented
  encryption conditions are evaluated against the request's headers: `Null`, `StringEquals`,
  `StringNotEquals` (and their `IfExists` forms) on `s3:x-amz-server-side-encryption` and
  `s3:x-amz-server-side-encryption-aws-kms-key-id`, for the requests that carry them (PutObject,
  CopyObject, CreateMultipartUpload; parts and completions carry none, and S3 does not refuse them).
  Statements for `Principal: "*"` only. This is not a policy engine: a statement with any other condition
  does not apply here (it is reported once on stderr).
* **Regions.** A request for a bucket signed for another region is refused as S3 refuses it:
  `400 AuthorizationHeaderMalformed` naming the bucket's `Region`, with the `x-amz-bucket-region`
  header (a HEAD gets the bare 400 and the header). boto3 then retries in the right region, as it does
  on AWS, at the cost of a round trip; `region_misses()` counts them so tests can require none.
  GetBucketLocation and CreateBucket are answered in any region.
* **Notification filters match the encoded key.** S3 matches prefix/suffix filter rules against the key
  as it appears in the event record, form-URL-encoded (space as `+`, `/` kept, other reserved and
  non-ASCII characters as `%XX`), and records carry that form; moto matched the raw key and encoded `/`.
* **Listings asked for URL encoding encode StartAfter and Delimiter too.** With `encoding-type=url`
  (which botocore always sends, decoding the answer) ListObjectsV2 returns `Delimiter`, `Prefix`, `Key`
  and `StartAfter` URL-encoded; moto echoed `StartAfter` raw, so a StartAfter holding a character XML
  cannot carry (a control character, as the backfill's probes between two keys may) made its answer
  unreadable: a 500 after botocore's retries.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from moto.core.utils import extract_region_from_aws_authorization
from moto.iam.access_control import PermissionResult
from moto.s3 import models as s3_models
from moto.s3 import notifications
from moto.s3.exceptions import S3AccessDeniedError
from moto.s3.models import FakeBucket, S3Backend
from moto.s3.responses import S3Response

KMS_ALGORITHMS = frozenset({"aws:kms", "aws:kms:dsse"})
_SSE_KEY = "s3:x-amz-server-side-encryption"
_KMS_KEY_ID_KEY = "s3:x-amz-server-side-encryption-aws-kms-key-id"
_HEADER_OF = {_SSE_KEY: "x-amz-server-side-encryption", _KMS_KEY_ID_KEY: "x-amz-server-side-encryption-aws-kms-key-id"}
_OPERATORS = frozenset({"Null", "StringEquals", "StringNotEquals", "StringEqualsIfExists", "StringNotEqualsIfExists"})

_installed = False
_lock = threading.Lock()
_region_misses = 0
_reported: set[str] = set()


class _Request(threading.local):
    """The S3 request this thread serves, as far as the policy seam needs it."""

    def __init__(self) -> None:
        self.action: str | None = None
        self.headers: Mapping[str, str] = {}


_request = _Request()


def region_misses() -> int:
    """Requests refused so far because they were signed for another region than their bucket's."""
    return _region_misses


def event_key(name: str) -> str:
    """A key as S3 writes it into event records and matches it against filter rules."""
    return quote_plus(name, safe="/")


# ---------------------------------------------------------------- encryption and ETags


def _encrypting(original: Callable[..., Any]) -> Callable[..., Any]:
    def put_object(self: Any, bucket_name: str, key_name: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
        bucket = self.get_bucket(bucket_name)
        if kwargs.get("encryption") is None and not bucket.encryption:
            kwargs["encryption"] = "AES256"  # S3's base level since January 2023
        key = original(self, bucket_name, key_name, value, *args, **kwargs)
        if key.encryption in KMS_ALGORITHMS:
            # Not an MD5 of the bytes, and new at every write; a multipart ETag keeps its part count.
            _, dash, parts = str(kwargs.get("etag") or "").rpartition("-")
            key._etag = secrets.token_hex(16) + (f"-{parts}" if dash and parts.isdigit() else "")
        return key

    return put_object


def _dsse_key_reported(original: Any) -> property:
    """moto names the KMS key of SSE-KMS objects only; S3 names it for DSSE-KMS objects too."""

    def response_dict(self: Any) -> dict[str, Any]:
        headers: dict[str, Any] = original.__get__(self)
        if self.encryption == "aws:kms:dsse" and self.kms_key_id is not None:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.kms_key_id
        return headers

    return property(response_dict)


# ---------------------------------------------------------------- bucket policies requiring SSE-KMS


def _object_write_action(method: str, query: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    """`s3:PutObject` for the requests that set an object's encryption, else None."""
    if method == "PUT" and not ("partNumber" in query and "uploadId" in query):
        return "s3:PutObject"  # PutObject and CopyObject
    if method == "POST" and "uploads" in query:
        return "s3:PutObject"  # CreateMultipartUpload
    return None


def _matches(pattern: str, value: str) -> bool:
    """IAM's wildcard match: `*` any run of characters, `?` one character."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value) is not None


def _any_matches(patterns: Any, value: str) -> bool:
    return any(_matches(str(pattern), value) for pattern in (patterns if isinstance(patterns, list) else [patterns]))


def _condition_holds(condition: Mapping[str, Mapping[str, Any]], headers: Mapping[str, str] | None) -> bool | None:
    """Whether the condition block holds for a request with these headers; None when it names an operator
    or key this seam does not evaluate, or the request is not one that carries encryption headers."""
    for operator, keys in condition.items():
        if operator not in _OPERATORS:
            return None
        for key, expected in keys.items():
            if key not in _HEADER_OF or headers is None:
                return None
            wanted = [str(value) for value in (expected if isinstance(expected, list) else [expected])]
            if not _operator_holds(operator, headers.get(_HEADER_OF[key]), wanted):
                return False
    return True


def _operator_holds(operator: str, actual: str | None, wanted: list[str]) -> bool:
    if operator == "Null":
        return (actual is None) == (wanted[0].lower() == "true")
    if actual is None:
        # IfExists forms hold for a missing key; so do negated operators; StringEquals does not.
        return operator.endswith("IfExists") or not operator.startswith("StringEquals")
    return (actual in wanted) == operator.startswith("StringEquals")


def _statement_applies(
    statement: Mapping[str, Any], action: str, resource: str, headers: Mapping[str, str] | None
) -> bool:
    principal = statement.get("Principal")
    if principal not in ("*", {"AWS": "*"}):
        return False  # named principals: this seam does not know who is asking
    if "Action" not in statement or not _any_matches(statement["Action"], action):
        return False
    if "Resource" not in statement or not _any_matches(statement["Resource"], resource):
        return False
    if "Condition" not in statement:
        return True
    holds = _condition_holds(statement["Condition"], headers)
    if holds is None:
        sid = str(statement.get("Sid", statement["Condition"]))
        if sid not in _reported:
            _reported.add(sid)
            print(f"local cloud: bucket policy statement {sid} not evaluated (condition unsupported)", file=sys.stderr)
        return False
    return holds


def _get_permission(self: Any, action: str, resource: str) -> PermissionResult:
    """FakeBucket.get_permission with request-aware encryption conditions; raises AccessDenied on a Deny."""
    if self.policy is None:
        return PermissionResult.NEUTRAL
    headers: Mapping[str, str] | None = None
    if _request.action is not None:
        action, headers = _request.action, _request.headers
    statements = json.loads(self.policy).get("Statement", [])
    permitted = False
    for statement in statements if isinstance(statements, list) else [statements]:
        if not _statement_applies(statement, action, resource, headers):
            continue
        if statement.get("Effect") == "Deny":
            raise S3AccessDeniedError
        permitted = True
    return PermissionResult.PERMITTED if permitted else PermissionResult.NEUTRAL


# ---------------------------------------------------------------- regions

_ANY_REGION = ("location",)


def _signing_region(request: Any) -> str | None:
    region = extract_region_from_aws_authorization(request.headers.get("Authorization", ""))
    if region is None:
        credential = str(getattr(request, "args", {}).get("X-Amz-Credential", "")).split("/")
        region = credential[2] if len(credential) > 2 else None
    return region


def _wrong_region(self: Any, request: Any, query: Mapping[str, Any], *, bucket_level: bool) -> Any:
    """The answer S3 gives a request signed for another region than its bucket's, or None."""
    global _region_misses  # noqa: PLW0603 - a process-wide count, read by the local cloud
    name = getattr(self, "bucket_name", None)
    signed_for = _signing_region(request)
    if not name or signed_for is None:
        return None
    if bucket_level and (any(word in query for word in _ANY_REGION) or (request.method == "PUT" and not query)):
        return None  # GetBucketLocation and CreateBucket are answered in any region
    bucket = self.backend.buckets.get(name)
    if bucket is None or bucket.region_name == signed_for:
        return None
    with _lock:
        _region_misses += 1
    headers = {"x-amz-bucket-region": bucket.region_name}
    if request.method == "HEAD":
        return 400, headers, b""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AuthorizationHeaderMalformed</Code>'
        f"<Message>The authorization header is malformed; the region '{signed_for}' is wrong; expecting "
        f"'{bucket.region_name}'</Message><Region>{bucket.region_name}</Region></Error>"
    )
    return 400, {**headers, "content-type": "application/xml"}, body.encode()


def _region_checked(original: Callable[..., Any], *, bucket_level: bool) -> Callable[..., Any]:
    def respond(self: Any, request: Any, full_url: str) -> Any:
        query = self._get_querystring(request, full_url) if bucket_level else _query_of(full_url)
        refused = _wrong_region(self, request, query, bucket_level=bucket_level)
        if refused is not None:
            return refused
        _request.action = None if bucket_level else _object_write_action(request.method, query, request.headers)
        _request.headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            return original(self, request, full_url)
        finally:
            _request.action, _request.headers = None, {}

    return respond


def _query_of(full_url: str) -> dict[str, list[str]]:
    from urllib.parse import parse_qs, urlparse  # noqa: PLC0415 - only the key path needs it

    return parse_qs(urlparse(full_url).query, keep_blank_values=True)


# ---------------------------------------------------------------- notification filters


def _key_matches(self: Any, key_name: str) -> bool:
    if "S3Key" not in self.filters:
        return True
    rules = self.filters["S3Key"]["FilterRule"]
    encoded = event_key(key_name)
    for rule in rules if isinstance(rules, list) else [rules]:
        if rule["Name"] == "prefix" and not encoded.startswith(rule["Value"]):
            return False
        if rule["Name"] == "suffix" and not encoded.endswith(rule["Value"]):
            return False
    return True


def _encoded_event_keys(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        body = original(event_name, bucket, key, notification_id)
        for record in body.get("Records", []):
            record["s3"]["object"]["key"] = event_key(str(key.name))
        return body

    return get_s3_event


# ---------------------------------------------------------------- listings in URL encoding


def _url_encoded_echoes(original: Callable[..., Any]) -> Callable[..., Any]:
    """ListObjectsV2 with `encoding-type=url` encodes the StartAfter and Delimiter it echoes, as it
    encodes Prefix and Key (moto encodes those two already)."""

    def list_objects_v2(self: Any) -> Any:
        if self.querystring.get("encoding-type", [None])[0] != "url":
            return original(self)
        serialized = self.serialized

        def encoding_echoes(action_result: Any) -> Any:
            result = action_result.result
            for field in ("StartAfter", "Delimiter"):
                if isinstance(result, dict) and result.get(field):
                    result[field] = quote(result[field])
            return serialized(action_result)

        self.serialized = encoding_echoes  # this request's response object only (one per request)
        return original(self)

    return list_objects_v2


def install() -> None:
    """Install the seams in this process (idempotent). Run after `s3_events.install()`, before serving."""
    global _installed  # noqa: PLW0603 - process-wide patch state
    if _installed:
        return
    setattr(S3Backend, "put_object", _encrypting(S3Backend.put_object))  # noqa: B010
    setattr(s3_models.FakeKey, "response_dict", _dsse_key_reported(s3_models.FakeKey.response_dict))  # noqa: B010
    setattr(FakeBucket, "get_permission", _get_permission)  # noqa: B010
    setattr(S3Response, "_bucket_response", _region_checked(S3Response._bucket_response, bucket_level=True))  # noqa: B010
    setattr(S3Response, "_key_response", _region_checked(S3Response._key_response, bucket_level=False))  # noqa: B010
    setattr(s3_models.Notification, "_key_matches", _key_matches)  # noqa: B010
    notifications._get_s3_event = _encoded_event_keys(notifications._get_s3_event)
    setattr(S3Response, "list_objects_v2", _url_encoded_echoes(S3Response.list_objects_v2))  # noqa: B010
    _installed = True
