"""What every RulesTable repository shares: DynamoDB's attribute-value wire form and its error."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message
from crr.errors import StateStoreError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values in DynamoDB's wire form; None values are left out (DynamoDB stores no nulls here)."""
    return {name: _serializer.serialize(value) for name, value in values.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def to_value(value: Any) -> Any:
    """One attribute value in DynamoDB's wire form (floats as Decimal, which it requires)."""
    return _serializer.serialize(Decimal(str(round(value, 3))) if isinstance(value, float) else value)


def from_value(value: Any) -> Any:
    return _deserializer.deserialize(value)


def state_error(exc: ClientError, operation: str) -> StateStoreError:
    return StateStoreError(f"DynamoDB {operation} failed: {error_code(exc)}: {error_message(exc)}", error_code(exc))
