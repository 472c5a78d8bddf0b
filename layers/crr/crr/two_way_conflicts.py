"""Two-way conflicts: how each side of a key is stamped, whether the source's side wins, and undoing a copy
that buried a user's change.

Every version either bucket holds of a key stands for one user change, stamped with its origin
(crr.stamps): a user's write or delete marker stamps itself; a replica carries its origin's stamp in
its marker metadata; a delete marker crr made carries none, so the rule that made it keeps a
TombstoneRecord. The rule S -> D then
- never sends back what came from D (the loop guard: exactly one copy per user change), and
- applies S's side to D only when S's stamp is later than D's, conditionally on D still holding the
  version it compared against. Both rules decide by the same total order, so they converge on the
  last writer, and a delete never removes a newer write (nor a write resurrect an older delete).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from crr.errors import DestinationChangedError
from crr.markers import MARKER_ORIGIN_TIME, MARKER_ORIGIN_VERSION, origin_etag, sealed_origin
from crr.models import KeyVersion, ObjectState, TombstoneRecord
from crr.ports.objects import ObjectStore
from crr.stamps import Stamp

# How far S3's clock may run behind ours: a marker made this long before our recorded intent to
# delete is still taken for ours (see ``marker_stamp``).
CLOCK_SKEW = timedelta(seconds=2)
# How many of a key's newest versions the check after a copy onto an absent key lists (one request
# whatever the number): other workers' copies may already lie on ours when it runs.
CHECKED_VERSIONS = 5


@dataclass(frozen=True)
class BuriedDelete:
    """A delete marker crr's copy landed on, and the version right under it (None: none listed)."""

    marker: KeyVersion
    under: KeyVersion | None


@dataclass(frozen=True)
class SideView:
    """What one bucket currently holds of a key."""

    state: ObjectState | None  # the current version; None when absent
    stamp: Stamp | None  # None: absent without a delete marker (never written, or its versions purged)
    marker_version: str | None = None  # the delete marker that makes it absent

    @property
    def origin(self) -> str | None:
        return self.stamp.origin if self.stamp else None


def stamp_of(state: ObjectState, bucket: str) -> Stamp:
    """A replica's stamp is its origin's (from its marker metadata, when the marker holds for this very
    object); anything else, a user's copy of a replica included, was written here."""
    origin = sealed_origin(state)
    written = state.metadata.get(MARKER_ORIGIN_TIME)
    if origin is not None and written is not None:
        try:
            return Stamp.of(datetime.fromisoformat(written), origin, state.metadata.get(MARKER_ORIGIN_VERSION))
        except ValueError:
            pass  # a damaged marker: the replica counts as a write made here, when it was written
    return Stamp.of(state.last_modified, bucket, state.version_id)


def same_write(one: ObjectState, one_bucket: str, other: ObjectState, other_bucket: str) -> bool:
    """Whether two objects (in two buckets) hold the same user write: the same origin stamp, to the
    second, and the same source ETag (a sealed replica's is its marker's, as SSE-KMS replicas have
    ETags of their own)."""
    first, second = stamp_of(one, one_bucket), stamp_of(other, other_bucket)
    return first.same_change(second) and first.time == second.time and _source_etag(one) == _source_etag(other)


def _source_etag(state: ObjectState) -> str:
    return origin_etag(state) or state.etag.strip('"')


def marker_stamp(marker: KeyVersion, bucket: str, record: TombstoneRecord | None, under: KeyVersion | None) -> Stamp:
    """The stamp of the delete a marker stands for.

    ``record`` is the registry of the rule that writes into ``bucket``; ``under`` the version right under
    the marker (None: there is none, or it is unknown). A marker the record settled carries the stamp it
    recorded. A marker no younger than a pending intent (written just before the delete), lying right on
    the version that intent deletes, is taken for the one that intent made, since the record of it may
    have been cut off; otherwise the marker is a user's delete, made in ``bucket`` when S3 says. (The
    intent may stay pending for a while: its worker stalls, or crashes before its retry. A user's delete
    made meanwhile lies on a later version, and taking it for crr's would give it the older stamp, so
    that an earlier write of the other side would be copied over it.)
    """
    if record is not None and record.stamp is not None and record.marker_version == marker.version_id:
        return record.stamp
    if (
        record is not None
        and record.pending_stamp is not None
        and record.pending_since is not None
        and marker.last_modified >= record.pending_since.replace(microsecond=0) - CLOCK_SKEW
        and (record.pending_target is None or (under is not None and under.version_id == record.pending_target))
    ):
        return record.pending_stamp
    return Stamp.of(marker.last_modified, bucket, marker.version_id)


def in_step(source: SideView, destination: SideView) -> bool:
    """Both sides hold the same change (or nothing at all)."""
    if source.state is None and destination.state is None:
        return True
    if source.stamp is None or destination.stamp is None:
        return False
    return (source.state is None) == (destination.state is None) and source.stamp.same_change(destination.stamp)


def source_wins(source: SideView, destination: SideView, source_bucket: str) -> bool:
    """Whether the destination must be made to match the source.

    Both absent: nothing to apply (deleting again would only add markers for the other rule to chase).
    Source absent with no marker (its versions purged): only the source's own copies are withdrawn.
    Otherwise the later stamp wins; one second and one origin means both came from the source, whose
    current version is then the one to hold unless the destination holds exactly it.
    """
    if source.state is None and destination.state is None:
        return False
    if source.stamp is None:
        return destination.origin == source_bucket
    if destination.stamp is None:
        return True
    if source.stamp.later_than(destination.stamp):
        return True
    if destination.stamp.later_than(source.stamp):
        return False
    return not source.stamp.same_change(destination.stamp)


def undo_buried_write(
    objects: ObjectStore, bucket: str, region: str, key: str, *, written: KeyVersion, compared: str | None
) -> None:
    """If-Match compares ETags, so a user's write of identical bytes (the same ETag: an empty file, or
    the same content with metadata of its own) made between our read of the destination (version
    ``compared``) and our copy passes the condition and is buried under our copy. Then our version
    (``written``, known by its id) is removed again, the user's write is current once more, and
    DestinationChangedError tells the caller to compare afresh. Costs one ListObjectVersions."""
    newest = objects.recent_versions(bucket, region, key, 2)
    if len(newest) < 2 or newest[0].version_id != written.version_id:
        return  # a later write covers ours: its own notification compares it
    if newest[1].version_id != compared and not newest[1].is_delete_marker:
        objects.delete_version(bucket, region, key, written.version_id)
        raise DestinationChangedError(f"a write of {bucket}/{key} with the same ETag landed under our copy")


def undo_buried_delete(
    objects: ObjectStore, bucket: str, region: str, key: str, *, written_etag: str, seen_marker: str | None
) -> BuriedDelete | None:
    """If-None-Match lets a copy land on a delete marker, so a user's delete made between our read of an
    absent destination (whose newest marker was ``seen_marker``) and our copy (known by its ETag) would be
    buried. Returns that delete (the caller then compares afresh), or None when nothing was buried.

    While our copy is the current version it is removed again, so the user's marker is current once more.
    But before this check another worker may have read our copy as the destination's state and copied a
    later source write over it: then the marker lies under both, and the caller must carry the delete
    over the version now current (crr.two_way_reconciliation), or that copy would bury it for good.
    Costs one ListObjectVersions.
    """
    newest = objects.recent_versions(bucket, region, key, CHECKED_VERSIONS)
    ours = next(
        (
            index
            for index, version in enumerate(newest)
            if not version.is_delete_marker and version.etag == written_etag
        ),
        None,
    )
    if ours is None or ours + 1 >= len(newest):
        return None  # not listed (a late check under many writes), or nothing under it
    under = newest[ours + 1]
    if not under.is_delete_marker or under.version_id == seen_marker:
        return None
    if ours == 0:
        objects.delete_version(bucket, region, key, newest[0].version_id)
    return BuriedDelete(under, newest[ours + 2] if ours + 2 < len(newest) else None)
