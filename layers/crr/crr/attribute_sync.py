"""Tag and ACL changes (crr.events.ChangeKind.METADATA) carried to the replica in place, without a copy."""

from __future__ import annotations

from crr.outcomes import Outcome
from crr.ports.objects import ObjectStore
from crr.rules import ReplicationRule
from crr.two_way_conflicts import same_write


def sync_attributes(objects: ObjectStore, rule: ReplicationRule, key: str) -> Outcome | None:
    """Carry a tag or ACL change to the replica in place, when the replica holds the source's current
    version (the same write, by origin stamp and ETag); None when it does not, so the key is
    reconciled as usual (a copy brings tags and ACL along).

    The replica's tags (and ACL) are read first and written only if they differ: in a two-way pair
    crr's own tag write is a tag change on the other side, and that echo must end there.
    """
    source = objects.head(rule.source_bucket, rule.source_region, key)
    if source is None:
        return None
    replica = objects.head(rule.destination_bucket, rule.destination_region, key)
    if replica is None or not same_write(source, rule.source_bucket, replica, rule.destination_bucket):
        return None
    changed = False
    tags = objects.tags(rule.source_bucket, rule.source_region, key, source.version_id)
    if objects.tags(rule.destination_bucket, rule.destination_region, key, replica.version_id) != tags:
        objects.put_tags(rule.destination_bucket, rule.destination_region, key, replica.version_id, tags)
        changed = True
    grants = objects.acl_grants(
        bucket=rule.source_bucket,
        region=rule.source_region,
        destination_bucket=rule.destination_bucket,
        destination_region=rule.destination_region,
        key=key,
        version_id=source.version_id,
    )
    if grants is not None:
        held = objects.acl_grants(
            bucket=rule.destination_bucket,
            region=rule.destination_region,
            destination_bucket=rule.source_bucket,
            destination_region=rule.source_region,
            key=key,
            version_id=replica.version_id,
        )
        if held != grants:
            objects.put_acl(rule.destination_bucket, rule.destination_region, key, replica.version_id, grants)
            changed = True
    return Outcome.ATTRIBUTES_UPDATED if changed else Outcome.ATTRIBUTES_CURRENT
