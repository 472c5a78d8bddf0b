"""Packaging, as `sam package` does it but into moto: zip local code, upload local definitions.

Every local `CodeUri` / `ContentUri` is zipped (deterministically) and every local state machine
definition (`DefinitionUri` / `DefinitionS3Location`) uploaded into the region's artifacts bucket in
moto, and the template is pointed at them. The directory each function's code came from is
remembered: the local executor runs the handler from there, not from the zip.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crr_cli.localcloud.clients import ClientFactory
from crr_cli.localcloud.deploy.errors import DeployError

ARTIFACTS_BUCKET_PREFIX = "crr-localcloud-artifacts"
_SKIPPED_IN_ZIPS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".aws-sam"}


def _zip_directory(directory: Path) -> bytes:
    """A deterministic zip of `directory` (sorted entries, fixed timestamps, no caches)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if not path.is_file() or _SKIPPED_IN_ZIPS.intersection(relative.parts) or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(relative.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def _local_dir(uri: Any, base_dir: Path, what: str) -> Path | None:
    """The directory a local `CodeUri`/`ContentUri` names, or None when it is not a local path."""
    if not isinstance(uri, str) or uri.startswith("s3://"):
        return None
    directory = (base_dir / uri).resolve()
    if not directory.is_dir():
        raise DeployError(f"{what} points at {directory}, which is not a directory")
    return directory


def _local_file(uri: Any, base_dir: Path, what: str) -> Path | None:
    """The file a local `DefinitionUri`/`DefinitionS3Location` names, or None when it is not a local path."""
    if not isinstance(uri, str) or uri.startswith("s3://"):
        return None
    path = (base_dir / uri).resolve()
    if not path.is_file():
        raise DeployError(f"{what} points at {path}, which is not a file")
    return path


@dataclass(frozen=True)
class _Artifacts:
    """Where packaging stores a stack's local artifacts: the region's artifacts bucket in moto."""

    s3: Any
    bucket: str
    stack_name: str
    base_dir: Path

    def upload(self, logical_id: str, body: bytes) -> str:
        """Store `body` under a content-addressed key of `logical_id`; returns the key."""
        key = f"{self.stack_name}/{logical_id}/{hashlib.sha256(body).hexdigest()}"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key


def _package_code(artifacts: _Artifacts, logical_id: str, resource: dict[str, Any], code_uri: Any) -> Path | None:
    """Zip and upload a function's or layer's local code directory (`code_uri` is the Globals
    default of functions); returns the directory, None when the code is not local."""
    kind = resource.get("Type")
    properties = resource["Properties"]
    uri_key = "CodeUri" if kind == "AWS::Serverless::Function" else "ContentUri"
    uri = properties.get(uri_key, code_uri if kind == "AWS::Serverless::Function" else None)
    directory = _local_dir(uri, artifacts.base_dir, f"{logical_id}.{uri_key}")
    if directory is None:
        return None
    key = artifacts.upload(logical_id, _zip_directory(directory))
    properties[uri_key] = f"s3://{artifacts.bucket}/{key}"
    return directory


def _package_definition(artifacts: _Artifacts, logical_id: str, resource: dict[str, Any]) -> None:
    """Upload a state machine's local definition file, as `sam package` does (SAM's `DefinitionUri`
    becomes an s3:// URI, CloudFormation's `DefinitionS3Location` a Bucket/Key pair)."""
    properties = resource["Properties"]
    serverless = resource.get("Type") == "AWS::Serverless::StateMachine"
    uri_key = "DefinitionUri" if serverless else "DefinitionS3Location"
    path = _local_file(properties.get(uri_key), artifacts.base_dir, f"{logical_id}.{uri_key}")
    if path is None:
        return
    key = artifacts.upload(logical_id, path.read_bytes())
    properties[uri_key] = f"s3://{artifacts.bucket}/{key}" if serverless else {"Bucket": artifacts.bucket, "Key": key}


_CODE_TYPES = ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
_STATE_MACHINE_TYPES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")


def package_artifacts(
    sam: dict[str, Any], base_dir: Path, clients: ClientFactory, region: str, stack_name: str
) -> dict[str, Path]:
    """Upload local code directories and state machine definitions, rewrite the URIs in `sam`;
    returns function logical id -> code dir."""
    s3 = clients.client("s3", region)
    artifacts = _Artifacts(s3, f"{ARTIFACTS_BUCKET_PREFIX}-{region}", stack_name, base_dir)
    _ensure_bucket(s3, artifacts.bucket, region)
    global_code_uri = sam.get("Globals", {}).get("Function", {}).get("CodeUri")
    code_dirs: dict[str, Path] = {}
    for logical_id, resource in sam.get("Resources", {}).items():
        kind = resource.get("Type")
        resource.setdefault("Properties", {})
        if kind in _CODE_TYPES:
            directory = _package_code(artifacts, logical_id, resource, global_code_uri)
            if directory is not None and kind == "AWS::Serverless::Function":
                code_dirs[logical_id] = directory
        elif kind in _STATE_MACHINE_TYPES:
            _package_definition(artifacts, logical_id, resource)
    return code_dirs
