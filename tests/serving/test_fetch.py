"""serving.fetch against real storage emulators on 127.0.0.1: moto (S3), gcp-storage-emulator (GCS),
Azurite (Azure Blob), and a local directory. Each emulator starts once per module on a free port; each
test writes under its own prefix with the cloud's own client, then fetches it with serving.fetch."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from serving import fetch as fetch_module
from serving.fetch import FetchError, RemoteFile, Source, fetch, main, open_filesystem, parse_source

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented development account and key (public, emulator-only).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


def _model_files() -> dict[str, bytes]:
    """A small model directory: nested paths, a binary file bigger than one read chunk."""
    weights = hashlib.sha256(b"weights").digest() * (70_000 // 32)
    return {
        "config.json": b'{"model_type": "llama", "hidden_size": 64}',
        "model.safetensors": weights,
        "tokenizer/tokenizer.json": b'{"version": "1.0"}',
    }


def _with_manifest(files: dict[str, bytes], **overrides: str) -> dict[str, bytes]:
    entries = {
        name: {"size": len(data), "sha256": overrides.get(name, hashlib.sha256(data).hexdigest())}
        for name, data in files.items()
    }
    return {**files, "manifest.json": json.dumps({"files": entries}).encode()}


class Store:
    """One storage backend: write files under a prefix with the cloud's own client, name its URL."""

    env: dict[str, str]  # what serving.fetch needs in its environment to reach this backend

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
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

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.client.put_object(Bucket="models", Key=f"{prefix}/{name}", Body=data)

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
            self.bucket = client.create_bucket("models")
        finally:
            del os.environ["STORAGE_EMULATOR_HOST"]

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.bucket.blob(f"{prefix}/{name}").upload_from_string(data)

    def url(self, prefix: str) -> str:
        return f"gs://models/{prefix}"


def _azurite_connection_string(port: int, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


class AzureStore(Store):
    def __init__(self, port: int) -> None:
        from azure.storage.blob import BlobServiceClient

        self.port = port
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": _azurite_connection_string(port)}
        service = BlobServiceClient.from_connection_string(self.env["AZURE_STORAGE_CONNECTION_STRING"])
        self.container = service.create_container("models")

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self.container.upload_blob(f"{prefix}/{name}", data)

    def url(self, prefix: str) -> str:
        return f"az://models/{prefix}?account={AZURITE_ACCOUNT}"


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {}

    def upload(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            path = self.root / prefix / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def url(self, prefix: str) -> str:
        return str(self.root / prefix)


@pytest.fixture(scope="module")
def s3_store() -> Iterator[S3Store]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _wait_for_port(port, "moto")
        yield S3Store(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs_store() -> Iterator[GcsStore]:
    from gcp_storage_emulator.server import create_server

    port = _free_port()
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
    port = _free_port()
    log = (tmp_path_factory.mktemp("azurite") / "azurite.log").open("wb")
    process = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
         "--disableTelemetry", "--skipApiVersionCheck", "--silent"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_for_port(port, "Azurite")
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


def _prefix() -> str:
    return f"tiny-{uuid.uuid4().hex[:8]}"


def _tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


# --- SOURCE parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "protocol", "root", "account"),
    [
        ("s3://models/tiny/v1", "s3", "models/tiny/v1", None),
        ("s3://models", "s3", "models", None),
        ("gs://models/tiny/", "gs", "models/tiny", None),
        ("az://models/tiny?account=servestackmodels", "az", "models/tiny", "servestackmodels"),
        ("abfs://models@servestackmodels.dfs.core.windows.net/tiny", "az", "models/tiny", "servestackmodels"),
        (
            "abfss://models@servestackmodels.dfs.core.windows.net/tiny",
            "az",
            "models/tiny",
            "servestackmodels",
        ),
        ("file:///opt/model", "file", "/opt/model", None),
        ("/opt/model", "file", "/opt/model", None),
    ],
)
def test_parse_source_accepts_documented_forms(url: str, protocol: str, root: str, account: str | None) -> None:
    assert parse_source(url) == Source(url, protocol, root, account)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/model", "unsupported scheme 'http'"),
        ("file://models/tiny", "expected file:///ABSOLUTE/PATH"),
        ("s3:///tiny", "expected s3://BUCKET/PREFIX"),
        ("az://models/tiny", "expected az://CONTAINER/PREFIX?account=ACCOUNT"),
        ("az://models/tiny?account=a&account=b", "expected az://CONTAINER/PREFIX?account=ACCOUNT"),
        ("az://models/tiny?account=Bad_Name", "storage account 'Bad_Name' must be 3-24 lowercase"),
        ("az://Models/tiny?account=servestackmodels", "container 'Models' must be 3-63 lowercase"),
        ("abfs://servestackmodels.dfs.core.windows.net/tiny", "expected abfs://CONTAINER@ACCOUNT"),
    ],
)
def test_parse_source_rejects_bad_forms_naming_the_value(url: str, expected: str) -> None:
    with pytest.raises(FetchError) as error:
        parse_source(url)
    assert repr(url) in str(error.value)
    assert expected in str(error.value)


# --- copying from each backend ----------------------------------------------------------------------


def test_fetch_copies_the_model_and_skips_complete_files(store: Store, tmp_path: Path) -> None:
    files = _with_manifest(_model_files())
    prefix = _prefix()
    store.upload(prefix, files)
    target = tmp_path / "model"

    first = fetch(store.url(prefix), target, log=lambda _: None)
    assert _tree(target) == files
    assert sorted(first.fetched) == sorted(files)
    assert first.bytes_fetched == sum(len(data) for data in files.values())

    lines: list[str] = []
    second = fetch(store.url(prefix), target, log=lines.append)
    assert second.fetched == []
    assert sorted(second.skipped) == sorted(files)
    assert "model.safetensors: already complete, skipped" in "\n".join(lines)


def test_fetch_refetches_a_truncated_file(store: Store, tmp_path: Path) -> None:
    files = _model_files()  # no manifest: completeness is judged by size alone
    prefix = _prefix()
    store.upload(prefix, files)
    target = tmp_path / "model"
    fetch(store.url(prefix), target, log=lambda _: None)

    weights = target / "model.safetensors"
    weights.write_bytes(files["model.safetensors"][:1000])
    report = fetch(store.url(prefix), target, log=lambda _: None)

    assert report.fetched == ["model.safetensors"]
    assert _tree(target) == files


def test_fetch_fails_on_a_hash_mismatch_naming_the_file(store: Store, tmp_path: Path) -> None:
    files = _with_manifest(_model_files(), **{"model.safetensors": "0" * 64})
    prefix = _prefix()
    store.upload(prefix, files)
    target = tmp_path / "model"

    with pytest.raises(FetchError) as error:
        fetch(store.url(prefix), target, log=lambda _: None)

    message = str(error.value)
    assert store.url(prefix) in message
    assert "model.safetensors: sha256 mismatch" in message
    # Nothing that looks complete is left behind for the damaged file, and no partial either.
    assert not (target / "model.safetensors").exists()
    assert not [p.name for p in target.rglob("*") if p.name.endswith(".partial")]


def test_fetch_of_a_missing_source_fails_naming_it(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store.url(_prefix())
    assert main([url, str(tmp_path / "model")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fetch failed: source {url}: not found")
    assert "Traceback" not in err


def test_fetch_of_a_missing_s3_bucket_fails_naming_it(s3_store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_store.env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(FetchError, match=r"^source s3://no-such-bucket/tiny: not found"):
        fetch("s3://no-such-bucket/tiny", "/nonexistent-target", log=lambda _: None)


def test_fetch_from_s3_with_access_denied_fails_naming_the_source(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prefix = _prefix()
    s3_store.upload(prefix, _model_files())
    for name, value in s3_store.env.items():
        monkeypatch.setenv(name, value)
    with s3_store.auth_enforced(), pytest.raises(FetchError) as error:
        fetch(s3_store.url(prefix), tmp_path / "model", log=lambda _: None)
    assert str(error.value).startswith(f"source {s3_store.url(prefix)}: access denied")
    assert "Access Key Id you provided does not exist" in str(error.value)


def test_fetch_from_azure_with_a_wrong_key_fails_naming_the_source(
    azure_store: AzureStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prefix = _prefix()
    azure_store.upload(prefix, _model_files())
    wrong_key = "A" * 86 + "=="
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", _azurite_connection_string(azure_store.port, wrong_key))
    with pytest.raises(FetchError) as error:
        fetch(azure_store.url(prefix), tmp_path / "model", log=lambda _: None)
    assert str(error.value).startswith(f"source {azure_store.url(prefix)}: access denied")
    assert "Server failed to authenticate the request" in str(error.value)


def test_a_source_naming_a_single_file_is_refused(store: Store, tmp_path: Path) -> None:
    prefix = _prefix()
    store.upload(prefix, {"model.gguf": b"GGUF"})
    url = store.url(f"{prefix}/model.gguf")
    with pytest.raises(FetchError, match=r"is a file; SOURCE must name a directory"):
        fetch(url, tmp_path / "model", log=lambda _: None)


def test_azure_authenticates_with_workload_identity_for_the_account_in_the_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No key or connection string in the pod: adlfs gets azure-identity's DefaultAzureCredential, which
    picks up AKS workload identity (AZURE_FEDERATED_TOKEN_FILE). Constructing it makes no request."""
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
                 "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ANON", "AZURE_STORAGE_CLIENT_ID"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    fs = open_filesystem(parse_source("abfs://models@servestackmodels.dfs.core.windows.net/tiny"))
    assert fs.account_name == "servestackmodels"
    assert fs.connection_string is None and fs.anon is False
    assert type(fs.credential).__module__.startswith("azure.identity.aio")
    assert type(fs.credential).__name__ == "DefaultAzureCredential"
    assert fs.service_client.url == "https://servestackmodels.blob.core.windows.net/"


# --- local-only cases -------------------------------------------------------------------------------


def test_a_same_size_file_with_other_bytes_is_refetched_when_the_manifest_has_its_hash(
    tmp_path: Path,
) -> None:
    files = _with_manifest(_model_files())
    source = LocalStore(tmp_path / "source")
    source.upload("tiny", files)
    target = tmp_path / "model"
    fetch(source.url("tiny"), target, log=lambda _: None)

    damaged = bytearray(files["model.safetensors"])
    damaged[0] ^= 0xFF
    (target / "model.safetensors").write_bytes(bytes(damaged))

    assert fetch(source.url("tiny"), target, log=lambda _: None).fetched == ["model.safetensors"]
    assert _tree(target) == files


def test_a_manifest_naming_a_missing_file_fails_naming_it(tmp_path: Path) -> None:
    files = _model_files()
    manifest = {"files": {"model-00002.safetensors": {"size": 1, "sha256": "0" * 64}}}
    source = LocalStore(tmp_path / "source")
    source.upload("tiny", {**files, "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(FetchError, match=r"manifest.json lists 'model-00002.safetensors', which is missing"):
        fetch(source.url("tiny"), tmp_path / "model", log=lambda _: None)


def test_an_interrupted_copy_leaves_no_file_that_looks_complete(tmp_path: Path) -> None:
    class BrokenStream:
        """Returns one chunk, then the connection drops."""

        def __init__(self) -> None:
            self.reads = 0

        def read(self, size: int) -> bytes:
            self.reads += 1
            if self.reads > 1:
                raise ConnectionResetError("connection reset by peer")
            return b"x" * size

        def __enter__(self) -> BrokenStream:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    class BrokenFilesystem:
        def open(self, path: str, mode: str) -> BrokenStream:
            return BrokenStream()

    target = tmp_path / "model" / "model.safetensors"
    remote = RemoteFile("model.safetensors", "models/tiny/model.safetensors", 10 * fetch_module.CHUNK_BYTES)
    with pytest.raises(ConnectionResetError):
        fetch_module._copy(BrokenFilesystem(), remote, target, parse_source("s3://models/tiny"))
    assert list(target.parent.iterdir()) == []


def test_the_command_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    result = subprocess.run(
        [sys.executable, "-m", "serving.fetch", str(missing), str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"fetch failed: source {missing}: not found (no such file or directory)"


def test_the_command_copies_a_local_directory(tmp_path: Path) -> None:
    LocalStore(tmp_path).upload("source", _model_files())
    source = tmp_path / "source"
    result = subprocess.run(
        [sys.executable, "-m", "serving.fetch", f"file://{source}", str(tmp_path / "copy")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert _tree(tmp_path / "copy") == _tree(source)
    assert result.stdout.rstrip().endswith(f"{tmp_path / 'copy'}: {len(_tree(source))} fetched, 0 already complete")


def test_long_copies_report_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(fetch_module, "PROGRESS_EVERY_S", 0.0)
    LocalStore(tmp_path).upload("source", {"model.safetensors": bytes(256 * 1024)})
    lines: list[str] = []
    fetch(str(tmp_path / "source"), tmp_path / "model", log=lines.append)
    assert "  model.safetensors: 128.0 KiB of 256.0 KiB" in lines
