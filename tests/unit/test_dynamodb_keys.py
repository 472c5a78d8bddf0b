"""The RulesTable's key schema (crr.adapters.dynamodb.keys): its layout pinned, and spelled nowhere else.

The layout is the table's on-disk format: items written by one release are read by the next, so a change
here is a data migration, not a refactoring, and these tests make it a deliberate one.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from crr.adapters.dynamodb import keys

ROOT = Path(__file__).resolve().parents[2]
# Where the table is read or written: the layer, the handlers, the CLI and the benchmarks.
SCANNED = ("layers", "functions", "cli", "bench")
KEYS_MODULE = ROOT / "layers" / "crr" / "crr" / "adapters" / "dynamodb" / "keys.py"
LONG_KEY = "é" * 512  # 1024 bytes of UTF-8: a legal S3 key, too long for a DynamoDB sort key


def test_every_item_of_the_table_has_the_documented_keys() -> None:
    # Given a rule, buckets, an object key, a job and a queue message
    # When their keys are composed
    # Then they are the layout the table has always had (see the module's docstring and docs/design.md)
    assert keys.rule_pk("r1") == "RULE#r1"
    assert keys.RULE_SK == "RULE"
    assert (keys.source_claim_pk("photos"), keys.destination_claim_pk("photos")) == ("SRC#photos", "DST#photos")
    assert keys.CLAIM_SK == "CLAIM"
    assert keys.ledger_sk("a/b c.txt") == "KEY#a/b c.txt"
    assert keys.PROGRESS_SK == "PROGRESS"
    assert keys.BREAKER_SK == "BREAKER"
    assert keys.held_sk("a/b") == "HELD#a/b"
    assert keys.tombstone_sk("a/b") == "TOMB#a/b"
    assert keys.backfill_sk("20261204T120000-abc") == "BACKFILL#20261204T120000-abc"
    assert keys.backfill_range_sk("j1", "0003") == "BACKFILL#j1#RANGE#0003"
    assert keys.backfill_tally_sk("j1", 7) == "BACKFILL#j1#TALLY#007"
    # And a job's ranges and tallies name their job, and neither is among the other's
    for sort_key in (keys.backfill_range_sk("j1", "0003"), keys.backfill_tally_sk("j1", 7)):
        assert keys.backfill_job_of(sort_key) == "j1"
    assert not keys.backfill_tally_sk("j1", 7).startswith(keys.backfill_ranges_prefix("j1"))
    assert not keys.backfill_range_sk("j1", "0003").startswith(keys.backfill_tallies_prefix("j1"))
    assert (keys.failure_pk("m-1"), keys.FAILURE_SK) == ("FAILURE#m-1", "FAILURE")


def test_object_keys_too_long_for_a_sort_key_are_hashed_under_their_own_prefix() -> None:
    # Given an S3 key of 1024 bytes
    digest = hashlib.sha256(LONG_KEY.encode("utf-8")).hexdigest()
    # When it is the subject of a ledger entry, a held delete and a tombstone
    # Then each is its hash under a distinct prefix, which the plain form's range queries still find
    assert keys.ledger_sk(LONG_KEY) == f"KEYH#{digest}"
    assert keys.held_sk(LONG_KEY) == f"HELDH#{digest}"
    assert keys.tombstone_sk(LONG_KEY) == f"TOMBH#{digest}"
    assert keys.held_sk(LONG_KEY).startswith(keys.HELD_SK_PREFIX)
    assert keys.held_sk("short").startswith(keys.HELD_SK_PREFIX)
    assert keys.backfill_sk("j").startswith(keys.BACKFILL_SK_PREFIX)
    assert keys.failure_pk("m").startswith(keys.FAILURE_PK_PREFIX)
    # And the longest key kept plain still fits the limit with its prefix
    plain = "k" * keys.MAX_PLAIN_SK_BYTES
    assert keys.tombstone_sk(plain) == f"TOMB#{plain}"
    assert len(keys.tombstone_sk(plain).encode("utf-8")) <= 1024


def _prefixes() -> set[str]:
    """Every ``NAME#`` the schema composes keys with, plain and hashed, derived from keys.py itself."""
    composers = [keys.rule_pk, keys.source_claim_pk, keys.destination_claim_pk, keys.backfill_sk, keys.failure_pk]
    found = {compose("") for compose in composers}
    for compose in (keys.ledger_sk, keys.held_sk, keys.tombstone_sk):
        found |= {compose(""), compose(LONG_KEY).split("#")[0] + "#"}
    return found


PREFIXES = _prefixes()
# Sort keys that are whole words; flagged only where they are a key's value (a CLI metavar may say RULE).
WHOLE_KEYS = {keys.RULE_SK, keys.CLAIM_SK, keys.PROGRESS_SK, keys.BREAKER_SK, keys.FAILURE_SK, keys.HELD_SK_PREFIX}
# Dictionary entries that carry a key's value: an item's or a Key's ``pk``/``sk``, a wire value ``{"S": ...}``,
# and expression values (``":pk"``, ``":held"``, ...).
KEY_CARRIERS = {"pk", "sk", "S"}


def _spelled_prefixes(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if any(node.value.startswith(prefix) for prefix in PREFIXES):
                yield node.lineno, node.value
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            # A constant of one's own for a sort key (``RULE_SK = "RULE"``) is a second home for the schema.
            names = [target.id for target in node.targets if isinstance(target, ast.Name)]
            if node.value.value in WHOLE_KEYS and any(name.endswith(("_SK", "_PK", "_PREFIX")) for name in names):
                yield node.lineno, f"{names[0]} = {node.value.value!r}"
        elif isinstance(node, ast.Dict):
            for name, value in zip(node.keys, node.values, strict=True):
                carrier = isinstance(name, ast.Constant) and (name.value in KEY_CARRIERS or str(name.value)[:1] == ":")
                if carrier and isinstance(value, ast.Constant) and value.value in WHOLE_KEYS:
                    yield value.lineno, str(value.value)


def _python_files() -> Iterator[Path]:
    for top in SCANNED:
        # keys.py is where the key schema is spelled, so it is the one module not scanned.
        yield from (
            path for path in sorted((ROOT / top).rglob("*.py")) if ".aws-sam" not in path.parts and path != KEYS_MODULE
        )


def test_the_detector_finds_the_ways_a_key_was_spelled_before_keys_py() -> None:
    # Given code written as the adapters were before the key schema had one home
    code = """
pk = f"SRC#{bucket}"
PROGRESS_SK = "PROGRESS"
item = {"pk": "FAILURE#" + message_id, "sk": "FAILURE"}
values = {":held": "HELD", ":jobs": "BACKFILL#"}
parser.add_argument("rule_id", metavar="RULE")
"""
    # When it is scanned
    found = [spelled for _, spelled in _spelled_prefixes(ast.parse(code))]
    # Then every key spelling is found, and the metavar is not
    assert sorted(found) == sorted(["SRC#", "PROGRESS_SK = 'PROGRESS'", "FAILURE#", "FAILURE", "HELD", "BACKFILL#"])


def test_the_scan_covers_every_reader_and_writer_of_the_table() -> None:
    scanned = {path.relative_to(ROOT).as_posix() for path in _python_files()}
    assert "layers/crr/crr/adapters/dynamodb/rules.py" in scanned
    assert "cli/crr_cli/status_command.py" in scanned
    assert "layers/crr/crr/adapters/dynamodb/keys.py" not in scanned


@pytest.mark.parametrize("path", list(_python_files()), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_but_keys_py_spells_a_key_of_the_table(path: Path) -> None:
    # Given a module of the layer, a handler, the CLI or a benchmark (keys.py excepted)
    # When its string literals are read
    spelled = list(_spelled_prefixes(ast.parse(path.read_text(encoding="utf-8"), str(path))))
    # Then none of them spells a key prefix or a sort key of the RulesTable: they come from keys.py
    assert spelled == [], f"{path.relative_to(ROOT)} spells RulesTable keys; use crr.adapters.dynamodb.keys"
