"""Object stores for tests, each a real emulator on 127.0.0.1: moto's server (S3), gcp-storage-emulator (GCS),
Azurite (Azure Blob), and a local directory. Each emulator starts once per test module on a free port, with one
bucket (container) named `models`; tests write and read under prefixes of their own with the cloud's own client.

The fixtures (`s3_store`, `gcs_store`, `azure_store`, and `store`, which runs a test once per backend with
the backend's variables in the environment) are made available to every test by tests/conftest.py."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented development account and key (public, emulator-only).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


class Store:
    """One storage backend: write and list files under a prefix with the cloud's own client, name its URLs."""

    env: dict[str, str]  # what serving.fetch needs in its environment to reach this backend
    bucket: str  # the bucket's URI, as a stack's model_bucket_uri output names it

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        raise NotImplementedError

    def names(self, prefix: str) -> set[str]:
        """The files under the prefix, by their paths relative to it."""
        raise NotImplementedError

    def url(self, prefix: str) -> str:
        raise NotImplementedError


class S3Store(Store):
    def __init__(self, endpoint: str) -> None:
        import boto3  # type: ignore[import-untyped]

        self.endpoint = endpoint
        self.env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        self.client.create_bucket(Bucket="models")
        self.bucket = "s3://models"

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.client.put_object(Bucket="models", Key=f"{prefix}/{name}", Body=data)

    def names(self, prefix: str) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket="models", Prefix=f"{prefix}/")
        return {item["Key"][len(prefix) + 1 :] for page in pages for item in page.get("Contents", [])}

    def url(self, prefix: str) -> str:
        return f"s3://models/{prefix}"

    @contextmanager
    def auth_enforced(self) -> Iterator[None]:
        """moto's documented switch: authenticate every request from now on (our key is unknown)."""
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        try:
            yield
        finally:
            httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()


class GcsStore(Store):
    def __init__(self, endpoint: str) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage  # type: ignore[import-untyped]

        self.env = {"STORAGE_EMULATOR_HOST": endpoint, "NO_GCE_CHECK": "true"}
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint  # read by the client at construction
        try:
            client = storage.Client(project="servestack-test", credentials=AnonymousCredentials())
            self.client = client.create_bucket("models")
        finally:
            del os.environ["STORAGE_EMULATOR_HOST"]
        self.bucket = "gs://models"

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.client.blob(f"{prefix}/{name}").upload_from_string(data)

    def names(self, prefix: str) -> set[str]:
        return {blob.name[len(prefix) + 1 :] for blob in self.client.list_blobs(prefix=f"{prefix}/")}

    def url(self, prefix: str) -> str:
        return f"gs://models/{prefix}"


def azurite_connection_string(port: int, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


class AzureStore(Store):
    def __init__(self, port: int) -> None:
        from azure.storage.blob import BlobServiceClient

        self.port = port
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(port)}
        service = BlobServiceClient.from_connection_string(self.env["AZURE_STORAGE_CONNECTION_STRING"])
        self.container = service.create_container("models")
        self.bucket = f"az://models?account={AZURITE_ACCOUNT}"

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.container.upload_blob(f"{prefix}/{name}", data, overwrite=True)

    def names(self, prefix: str) -> set[str]:
        return {name[len(prefix) + 1 :] for name in self.container.list_blob_names(name_starts_with=f"{prefix}/")}

    def url(self, prefix: str) -> str:
        return f"az://models/{prefix}?account={AZURITE_ACCOUNT}"


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {}
        self.bucket = str(root)

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            path = self.root / prefix / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def names(self, prefix: str) -> set[str]:
        base = self.root / prefix
        return {path.relative_to(base).as_posix() for path in base.rglob("*") if path.is_file()}

    def url(self, prefix: str) -> str:
        return str(self.root / prefix)


@pytest.fixture(scope="module")
def s3_store() -> Iterator[S3Store]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for_port(port, "moto")
        yield S3Store(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs_store() -> Iterator[GcsStore]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield GcsStore(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def azure_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureStore]:
    if not AZURITE.exists():
        pytest.fail(f"Azurite is not installed at {AZURITE}: run `npm ci` in the repository root")
    port = free_port()
    log = (tmp_path_factory.mktemp("azurite") / "azurite.log").open("wb")
    process = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
         "--disableTelemetry", "--skipApiVersionCheck", "--silent"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, "Azurite")
        yield AzureStore(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


@pytest.fixture(params=["s3", "gs", "az", "local"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Store:
    backend: Store
    if request.param == "local":
        backend = LocalStore(tmp_path / "source")
    else:
        backend = request.getfixturevalue({"s3": "s3_store", "gs": "gcs_store", "az": "azure_store"}[request.param])
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    return backend

