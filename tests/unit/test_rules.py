"""Rule validation: the errors a user sees for each kind of bad rule."""

from __future__ import annotations

import pytest

from crr.errors import InvalidPrefixError, InvalidRuleError, SameBucketError, SameRegionError
from crr.rules import RuleStatus
from tests.support.rules import make_rule


def test_a_valid_rule_defaults_to_enabled_with_deletes_and_all_keys() -> None:
    made = make_rule()
    assert made.status is RuleStatus.ENABLED
    assert made.replicate_deletes
    assert made.selects("any/key")


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"destination_region": "us-west-1"}, SameRegionError, "both in us-west-1"),
        ({"destination_bucket": "src-bucket"}, SameBucketError, "both bucket 'src-bucket'"),
        ({"prefixes": ("/logs",)}, InvalidPrefixError, "starts with '/'"),
        ({"prefixes": ("",)}, InvalidPrefixError, "empty prefix"),
        ({"prefixes": ("a\nb",)}, InvalidPrefixError, "control characters"),
        ({"prefixes": ("k" * 1025,)}, InvalidPrefixError, "longer than an S3 key"),
        ({"prefixes": ("logs/", "logs/2026/")}, InvalidPrefixError, "already covered"),
        ({"source_bucket": "Has_Upper"}, InvalidRuleError, "not a valid S3 bucket name"),
        ({"source_bucket": "192.168.0.1"}, InvalidRuleError, "not a valid S3 bucket name"),
        ({"destination_region": "mars-1"}, InvalidRuleError, "not an AWS region"),
        ({"storage_class": "CHEAP"}, InvalidRuleError, "storage class 'CHEAP'"),
        ({"rule_id": "bad id!"}, InvalidRuleError, "rule id"),
        ({"replicate_deletes": "perhaps"}, InvalidRuleError, "replicate_deletes"),
    ],
)
def test_invalid_rules_raise_specific_errors(
    overrides: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make_rule(**overrides)


def test_prefixes_select_only_their_keys() -> None:
    made = make_rule(prefixes=("logs/", "img/"))
    assert made.selects("logs/a")
    assert made.selects("img/b")
    assert not made.selects("data/c")
    assert made.prefixes == ("img/", "logs/")


def test_a_replica_kms_key_must_be_a_key_of_the_destination_region() -> None:
    # Given keys in the wrong region and not ARNs at all, Then both are refused with the reason
    with pytest.raises(InvalidRuleError, match="KMS keys are regional"):
        make_rule(replica_kms_key_arn="arn:aws:kms:us-west-1:111122223333:key/abc")
    with pytest.raises(InvalidRuleError, match="not a KMS key or alias ARN"):
        make_rule(replica_kms_key_arn="my-key")
    assert make_rule(replica_kms_key_arn="arn:aws:kms:us-east-1:111122223333:alias/replicas").replica_kms_key_arn
