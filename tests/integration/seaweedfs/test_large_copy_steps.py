"""The large-copy workflow's steps on a real S3 server (SeaweedFS): each step runs as its own
invocation would (a fresh copier), a failed batch resumes from ListParts, and an overwrite between
batches is refused by the server (CopySourceIfMatch, which moto ignores), so no mixed replica is made.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from crr.adapters.clients import ClientFactory
from crr.adapters.s3 import S3ObjectStore
from crr.adapters.s3_multipart import S3MultipartUploads
from crr.errors import SourceChangedError
from crr.large_copy import LargeCopier
from crr.models import CopyRequest, LargeCopyJob
from crr.part_planning import MIB, plan_parts
from tests.support.fakes import FakeKeyHandOver, FakeProgress
from tests.support.seaweedfs import SeaweedFS

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-1", "us-east-1"
LAYOUT = (5 * MIB, 6 * MIB, 5 * MIB, 5 * MIB, 2 * MIB)


@dataclass(frozen=True)
class Site:
    server: SeaweedFS
    source: str
    destination: str
    clients: ClientFactory
    hand_over: FakeKeyHandOver

    def copier(self) -> LargeCopier:
        """A fresh copier per step, as each step of the workflow is its own invocation."""
        return LargeCopier(
            S3MultipartUploads(self.clients),
            S3ObjectStore(self.clients),
            self.hand_over,
            FakeProgress(),
            batch_bytes=11 * MIB,
        )


@pytest.fixture
def site(seaweedfs: SeaweedFS) -> Site:
    suffix = uuid.uuid4().hex[:12]
    source, destination = f"src-steps-{suffix}", f"dst-steps-{suffix}"
    seaweedfs.create_bucket(source)
    seaweedfs.create_bucket(destination)
    return Site(seaweedfs, source, destination, ClientFactory(session=seaweedfs.session()), FakeKeyHandOver())


def upload(s3: Any, bucket: str, key: str, body: bytes) -> str:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4")["UploadId"]
    parts, start = [], 0
    for number, size in enumerate(LAYOUT, start=1):
        sent = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body[start : start + size]
        )
        parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        start += size
    done = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    return str(done["ETag"])


def job_for(site: Site, key: str) -> LargeCopyJob:
    store = S3ObjectStore(site.clients)
    state = store.head(site.source, WEST, key)
    assert state is not None
    request = CopyRequest(site.source, WEST, site.destination, EAST, state, dict(state.metadata), None, None)
    sizes = [part.size for part in plan_parts(state.size, store.part_sizes(site.source, WEST, state))]
    return LargeCopyJob(rule_id="r1", request=request, part_sizes=sizes, event_time=state.last_modified)


def fail_once_at_part(client: Any, number: int) -> None:
    """The invocation dies (a connection reset) when it is about to copy part ``number``, once."""
    fired: list[bool] = []

    def before(params: dict[str, Any], **_: Any) -> None:
        if params["PartNumber"] == number and not fired:
            fired.append(True)
            raise ConnectionResetError("injected: the invocation died during this part")

    client.meta.events.register("before-parameter-build.s3.UploadPartCopy", before)


def test_a_batch_cut_off_mid_way_resumes_from_the_parts_the_upload_holds(site: Site) -> None:
    # Given a 23 MiB source in five parts, and a workflow prepared in batches of at most 11 MiB
    s3 = site.server.client()
    body = os.urandom(sum(LAYOUT))
    source_etag = upload(s3, site.source, "media/clip.mp4", body)
    prepared = site.copier().prepare(job_for(site, "media/clip.mp4"))
    assert [(batch.first, batch.last) for batch in prepared.batches] == [(1, 2), (3, 4), (5, 5)]
    # When the first batch's invocation dies during part 2, and Step Functions runs it again
    fail_once_at_part(site.clients.client("s3", EAST), 2)
    with pytest.raises(ConnectionResetError):
        site.copier().copy_batch(prepared.job, prepared.batches[0])
    again = site.copier().copy_batch(prepared.job, prepared.batches[0])
    rest = [site.copier().copy_batch(prepared.job, batch) for batch in prepared.batches[1:]]
    completed = site.copier().complete(prepared.job)
    # Then the re-run copied only the part still missing, and the replica is the source, whole
    assert (again.copied, again.reused) == (1, 1)
    assert sum(batch.copied for batch in rest) == 3
    assert completed.outcome == "copied"
    assert s3.head_object(Bucket=site.destination, Key="media/clip.mp4")["ETag"] == source_etag
    replica = s3.get_object(Bucket=site.destination, Key="media/clip.mp4")["Body"].read()
    assert hashlib.sha256(replica).digest() == hashlib.sha256(body).digest()
    assert s3.list_multipart_uploads(Bucket=site.destination).get("Uploads", []) == []


def test_an_overwrite_between_batches_is_refused_by_the_server_and_handed_back(site: Site) -> None:
    # Given a copy whose first batch is done
    s3 = site.server.client()
    upload(s3, site.source, "media/clip.mp4", os.urandom(sum(LAYOUT)))
    prepared = site.copier().prepare(job_for(site, "media/clip.mp4"))
    site.copier().copy_batch(prepared.job, prepared.batches[0])
    # When the source is overwritten before the next batch
    s3.put_object(Bucket=site.source, Key="media/clip.mp4", Body=b"a newer, small version")
    # Then the next batch's parts are refused (pinned to the old ETag), and giving up aborts the upload
    # and hands the key back to the live path; no replica mixing the two versions exists
    with pytest.raises(SourceChangedError):
        site.copier().copy_batch(prepared.job, prepared.batches[1])
    gave_up = site.copier().give_up(prepared.job, "SourceChangedError", "overwritten")
    assert gave_up.outcome == "handed_back"
    assert [key for key, _ in site.hand_over.reconciled] == ["media/clip.mp4"]
    assert s3.list_multipart_uploads(Bucket=site.destination).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=site.destination)
