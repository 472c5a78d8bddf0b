"""KMS for rule management: what key a replica-key ARN or alias names."""

from __future__ import annotations

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory, error_code, error_message
from crr.errors import ReplicaKeyError


class KmsKeys:
    """``crr.ports.services.KeyDirectory`` over DescribeKey (one request per rule added)."""

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    def key_arn(self, key: str, region: str) -> str:
        """The key ARN that ``key`` (a key ARN or an alias ARN) names in ``region``.

        Raises ReplicaKeyError when the key or alias does not exist, is not visible to these
        credentials, or is not an enabled symmetric key for encryption."""
        try:
            found = self._clients.client("kms", region).describe_key(KeyId=key)["KeyMetadata"]
        except ClientError as exc:
            raise ReplicaKeyError(f"replica KMS key {key!r}: {error_code(exc)}: {error_message(exc)}") from exc
        if (
            found.get("KeyState", "Enabled") != "Enabled"
            or found.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT"
        ):
            raise ReplicaKeyError(
                f"replica KMS key {key!r} is {found.get('KeyState')} with usage {found.get('KeyUsage')}: "
                "S3 needs an enabled key for ENCRYPT_DECRYPT"
            )
        return str(found["Arn"])
