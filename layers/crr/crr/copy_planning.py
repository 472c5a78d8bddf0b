"""Copy planning: the CopyRequest for a source version, and how it is copied.

A copy is one of three: a single CopyObject; a copy in parts, in the source's own part layout
(crr.part_planning), for a source uploaded in parts or above the multipart threshold (a single
CopyObject copies at most 5 GiB); or, when neither fits the time the invocation has left, a hand-off to
the large-copy workflow (crr.large_copy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from crr.errors import ReplicaKeyMissingError
from crr.large_copy import LargeObjectSettings
from crr.markers import marker_for, user_metadata
from crr.models import CopyRequest, KeyVersion, LargeCopyJob, ObjectState
from crr.part_planning import plan_parts
from crr.ports.objects import ObjectStore
from crr.ports.services import LargeCopyLauncher
from crr.rules import ReplicationRule
from crr.two_way_conflicts import SideView

MAX_SINGLE_COPY_BYTES = 5 * 1024**3
# The version id of a replica written in parts: the check for a buried write is skipped for it.
UNKNOWN_VERSION = "null"


class CopyPlanner:
    """Builds and issues the copy of a source version to a rule's destination."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        clock: Callable[[], datetime],
        remaining_seconds: Callable[[], float],
        large_objects: LargeObjectSettings,
        large_copies: LargeCopyLauncher | None,
    ) -> None:
        """``remaining_seconds``: the time the invocation has left, asked only when a hand-off is possible."""
        self._objects = objects
        self._clock = clock
        self._remaining_seconds = remaining_seconds
        self._large_objects = large_objects
        self._large_copies = large_copies

    def copy(self, rule: ReplicationRule, state: ObjectState, over: SideView | None = None) -> KeyVersion | None:
        """CopyObject; or, for a source uploaded in parts or above the multipart threshold, a copy in parts
        (in the source's own part layout, so the replica's ETag is the source's). Either is made here when
        it fits the invocation's remaining time, else handed to the large-copy workflow (returns None then).

        ``over``: the destination side a two-way copy replaces; the write is conditional on it.
        Returns the replica's version (its id is "unknown" after a copy in parts, whose answer does not
        carry one here). Raises ReplicaKeyMissingError (see ``request``), SourceChangedError and
        SourceGoneError when the pinned source version is no longer current, DestinationChangedError
        when ``over`` no longer is, and StorageError for the rest.
        """
        request = self.request(rule, state)
        if over is not None:
            request = replace(
                request,
                destination_etag=over.state.etag if over.state else None,
                destination_absent=over.state is None,
            )
        settings = self._large_objects
        # A single CopyObject streams for as long as a multipart copy of the same size: it too must fit.
        fits = self._large_copies is None or state.size == 0 or settings.fits(state.size, self._remaining_seconds())
        if (
            fits
            and state.parts_count is None
            and state.size <= min(settings.multipart_threshold, MAX_SINGLE_COPY_BYTES)
        ):
            if over is not None:
                return self._objects.copy_version(request)
            # One-way copies never check what they replaced: the ETag is all they need.
            return KeyVersion(UNKNOWN_VERSION, self._clock(), False, self._objects.copy(request))
        layout = self._objects.part_sizes(rule.source_bucket, rule.source_region, state) if state.parts_count else None
        parts = plan_parts(state.size, layout, settings.preferred_part)
        if not fits and self._large_copies is not None:
            job = LargeCopyJob(
                rule_id=rule.rule_id,
                request=request,
                part_sizes=[part.size for part in parts],
                event_time=state.last_modified,
                seen_marker_version=over.marker_version if over is not None else None,
            )
            self._large_copies.start(job)
            return None
        etag = self._objects.multipart_copy(request, parts)
        return KeyVersion(UNKNOWN_VERSION, self._clock(), False, etag)

    def request(self, rule: ReplicationRule, state: ObjectState) -> CopyRequest:
        """The copy of ``state``, pinned to its version: its user metadata plus the replica marker, the
        storage class, and its ACL grants (a GetObjectAcl only when both buckets use ACLs).

        Raises ReplicaKeyMissingError for an SSE-KMS source whose rule names no replica key: copying it
        under the destination's default encryption would weaken it.
        """
        if state.kms_encrypted and rule.replica_kms_key_arn is None:
            raise ReplicaKeyMissingError(
                f"{rule.source_bucket}/{state.key} is encrypted with {state.server_side_encryption}; rule "
                f"{rule.rule_id} names no "
                "replica_kms_key_arn, and copying it under the destination's default encryption would weaken it"
            )
        grants = self._objects.acl_grants(
            bucket=rule.source_bucket,
            region=rule.source_region,
            destination_bucket=rule.destination_bucket,
            destination_region=rule.destination_region,
            key=state.key,
            version_id=state.version_id,
        )
        marker = marker_for(state, rule.source_bucket, self._clock())
        return CopyRequest(
            source_bucket=rule.source_bucket,
            source_region=rule.source_region,
            destination_bucket=rule.destination_bucket,
            destination_region=rule.destination_region,
            state=state,
            metadata={**user_metadata(state), **marker},
            storage_class=rule.storage_class or state.storage_class,
            grants=grants,
            replica_kms_key_arn=rule.replica_kms_key_arn if state.kms_encrypted else None,
            replica_encryption=state.server_side_encryption if state.kms_encrypted else None,
        )
