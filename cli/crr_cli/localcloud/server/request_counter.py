"""Count the local cloud's requests by service and operation, and time object writes, server side.

Benchmarks ask ``GET /_crr/requests`` for the counts (``POST /_crr/requests`` answers and zeroes them):
handlers run in other processes, so counting where the requests arrive is the only complete view.
``GET /_crr/writes?bucket=NAME`` answers when (epoch seconds) each key of the bucket was last
written by a successful PutObject/CopyObject: the moment a replica became visible, measured
without adding any request.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_S3_BUCKET_QUERIES = (
    "ownershipControls",
    "notification",
    "versioning",
    "location",
    "tagging",
    "acl",
    "uploads",
    "versions",
    "policy",
    "lifecycle",
)


def _object_operation(method: str, subresource: str, query: dict[str, list[str]], copy_source: bool) -> str:
    if subresource in {"tagging", "acl"}:
        verb = {"GET": "Get", "PUT": "Put"}.get(method, "Delete")
        return f"{verb}Object{'Tagging' if subresource == 'tagging' else 'Acl'}"
    if "uploadId" in query or subresource == "uploads":
        return "MultipartUpload" + method.title()
    if method == "PUT":
        return "CopyObject" if copy_source else "PutObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


def s3_operation(method: str, path: str, query: dict[str, list[str]], copy_source: bool) -> str:
    """Name the S3 REST operation of a path-style request (good enough for counting)."""
    parts = [part for part in path.split("/", 2)[1:] if part]
    subresource = next((name for name in _S3_BUCKET_QUERIES if name in query), "")
    if len(parts) == 2:
        return _object_operation(method, subresource, query, copy_source)
    if method == "GET" and not subresource:
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return f"{method.title()}Bucket{subresource[:1].upper()}{subresource[1:]}"


def signing_service(environ: Environ) -> str | None:
    """The service a SigV4-signed request is signed for (`dynamodb` also for DynamoDB Streams), or
    None for an unsigned request such as moto's own API."""
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return None if scope is None else scope.group(1)


class RequestCounter:
    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._counts: Counter[str] = Counter()
        self._written_at: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_crr/"):
            return self._answer(environ, start_response)
        name = self._name(environ)
        if name:
            with self._lock:
                self._counts[name] += 1
        if name in {"s3:PutObject", "s3:CopyObject"}:
            return self._app(environ, self._timing_write(path, start_response))
        return self._app(environ, start_response)

    def _timing_write(self, path: str, start_response: StartResponse) -> StartResponse:
        def record_if_stored(status: str, headers: Any, *args: Any) -> Any:
            if status.startswith("200"):
                bucket, _, key = path.lstrip("/").partition("/")
                with self._lock:
                    self._written_at.setdefault(bucket, {})[unquote(key)] = time.time()
            return start_response(status, headers, *args)

        return record_if_stored

    def _name(self, environ: Environ) -> str | None:
        service = signing_service(environ)
        if service is None:
            return None  # moto's own API, unsigned calls
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return f"{service}:{target.rsplit('.', 1)[-1]}"
        if service == "s3":
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            operation = s3_operation(
                environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), query, "HTTP_X_AMZ_COPY_SOURCE" in environ
            )
            return f"s3:{operation}"
        return f"{service}:{environ['REQUEST_METHOD']}"

    def _answer(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            if environ["PATH_INFO"].startswith("/_crr/writes"):
                bucket = parse_qs(environ.get("QUERY_STRING", "")).get("bucket", [""])[0]
                body = json.dumps(self._written_at.get(bucket, {})).encode()
            else:
                body = json.dumps(dict(self._counts)).encode()
                if environ["REQUEST_METHOD"] == "POST":  # answers the counts up to the reset
                    self._counts.clear()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
