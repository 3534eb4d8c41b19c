"""serving.fetch against real storage emulators on 127.0.0.1 (tests/storage.py): moto (S3),
gcp-storage-emulator (GCS), Azurite (Azure Blob), and a local directory. Each test writes a revision under
its own prefix with the cloud's own client, then fetches it with serving.fetch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from serving import fetch as fetch_module
from serving.fetch import FetchError, RemoteFile, Source, fetch, main, open_filesystem, parse_source
from serving.manifest import FileEntry, Manifest, ManifestError, check_served_model
from tests.storage import AzureStore, LocalStore, S3Store, Store, azurite_connection_string

REPO = Path(__file__).resolve().parents[2]


def _model_files() -> dict[str, bytes]:
    """A small model directory: nested paths, a binary file bigger than one read chunk."""
    weights = hashlib.sha256(b"weights").digest() * (70_000 // 32)
    return {
        "config.json": b'{"model_type": "llama", "hidden_size": 64}',
        "model.safetensors": weights,
        "tokenizer/tokenizer.json": b'{"version": "1.0"}',
    }


def _manifest(files: dict[str, bytes], name: str = "tiny", revision: str = "r1") -> Manifest:
    entries = {path: FileEntry(len(data), hashlib.sha256(data).hexdigest()) for path, data in files.items()}
    return Manifest(name, revision, entries)


def _revision(files: dict[str, bytes], name: str = "tiny", revision: str = "r1") -> dict[str, bytes]:
    """FILES with the manifest of model NAME at REVISION, as a push leaves them in the bucket."""
    return {**files, "manifest.json": _manifest(files, name, revision).to_json()}


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


def test_joinpath_names_a_subdirectory_in_the_same_form() -> None:
    parts = ("models", "tiny", "r1")
    assert parse_source("s3://models").joinpath(*parts) == parse_source("s3://models/models/tiny/r1")
    assert parse_source("gs://models/").joinpath(*parts).url == "gs://models/models/tiny/r1"
    assert parse_source("az://models?account=servestackmodels").joinpath(*parts) == Source(
        "az://models/models/tiny/r1?account=servestackmodels", "az", "models/models/tiny/r1", "servestackmodels")
    abfs = "abfs://models@servestackmodels.blob.core.windows.net"
    assert parse_source(abfs).joinpath(*parts).url == f"{abfs}/models/tiny/r1"
    assert parse_source("/srv/models").joinpath(*parts) == Source("/srv/models/models/tiny/r1", "file",
                                                                   "/srv/models/models/tiny/r1")


# --- copying from each backend ----------------------------------------------------------------------


def test_fetch_copies_the_revision_and_skips_complete_files(store: Store, tmp_path: Path) -> None:
    files = _model_files()
    prefix = _prefix()
    store.upload(prefix, _revision(files))
    target = tmp_path / "model"

    first = fetch(store.url(prefix), target, name="tiny", revision="r1", log=lambda _: None)
    assert _tree(target) == _revision(files)  # the manifest too, written last
    assert sorted(first.fetched) == sorted(files)
    assert first.bytes_fetched == sum(len(data) for data in files.values())

    lines: list[str] = []
    second = fetch(store.url(prefix), target, name="tiny", revision="r1", log=lines.append)
    assert second.fetched == []
    assert sorted(second.skipped) == sorted(files)
    assert "model.safetensors: already complete, skipped" in "\n".join(lines)


def test_fetch_refetches_a_truncated_file(store: Store, tmp_path: Path) -> None:
    files = _model_files()
    prefix = _prefix()
    store.upload(prefix, _revision(files))
    target = tmp_path / "model"
    fetch(store.url(prefix), target, log=lambda _: None)

    weights = target / "model.safetensors"
    weights.write_bytes(files["model.safetensors"][:1000])
    report = fetch(store.url(prefix), target, log=lambda _: None)

    assert report.fetched == ["model.safetensors"]
    assert _tree(target) == _revision(files)


def test_a_tampered_object_fails_the_fetch_naming_it(store: Store, tmp_path: Path) -> None:
    files = _model_files()
    prefix = _prefix()
    store.upload(prefix, _revision(files))
    tampered = bytearray(files["model.safetensors"])
    tampered[1000] ^= 0xFF  # same size: only the hash can tell
    store.upload(prefix, {"model.safetensors": bytes(tampered)})
    target = tmp_path / "model"

    with pytest.raises(FetchError) as error:
        fetch(store.url(prefix), target, name="tiny", revision="r1", log=lambda _: None)

    message = str(error.value)
    assert store.url(prefix) in message
    assert "model.safetensors: sha256 mismatch" in message
    # Nothing that looks complete is left: not the damaged file, no partial, and no manifest for the directory.
    assert not (target / "model.safetensors").exists()
    assert not (target / "manifest.json").exists()
    assert not [p.name for p in target.rglob("*") if p.name.endswith(".partial")]


def test_a_source_without_a_manifest_fails_saying_how_to_push_one(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = _prefix()
    store.upload(prefix, _model_files())
    target = tmp_path / "model"

    assert main([store.url(prefix), str(target), "--name", "tiny", "--revision", "r1"]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"fetch failed: source {store.url(prefix)}: no manifest.json")
    assert "servestack model push --stack STACK --revision REVISION DIR" in err
    assert not target.exists()


@pytest.mark.parametrize(
    ("name", "revision", "expected"),
    [("tiny", "r2", "expected revision 'r2'"), ("smollm2", "r1", "expected model 'smollm2'")],
)
def test_a_manifest_naming_another_model_or_revision_fails_fetch_and_server_check(
    store: Store, tmp_path: Path, name: str, revision: str, expected: str
) -> None:
    """A revision copied by hand to another revision's place: the fetch refuses it before copying anything,
    and a directory holding it does not pass the server's check at start either."""
    prefix = _prefix()
    store.upload(prefix, _revision(_model_files(), "tiny", "r1"))
    target = tmp_path / "model"

    with pytest.raises(FetchError) as error:
        fetch(store.url(prefix), target, name=name, revision=revision, log=lambda _: None)
    assert str(error.value) == f"{store.url(prefix)} manifest.json is model 'tiny' revision 'r1', {expected}"
    assert not target.exists()

    fetch(store.url(prefix), target, log=lambda _: None)  # no expectations: the copy itself is sound
    with pytest.raises(ManifestError) as refused:
        check_served_model(target, name, revision)
    assert str(refused.value) == f"{target}/manifest.json is model 'tiny' revision 'r1', {expected}"
    assert check_served_model(target, "tiny", "r1") == _manifest(_model_files())


def test_objects_the_manifest_does_not_list_are_not_copied(store: Store, tmp_path: Path) -> None:
    files = _model_files()
    prefix = _prefix()
    store.upload(prefix, {**_revision(files), "notes.txt": b"left by hand", "old/model.bin": b"x" * 10})
    lines: list[str] = []

    fetch(store.url(prefix), tmp_path / "model", log=lines.append)

    assert _tree(tmp_path / "model") == _revision(files)
    assert "  not in manifest.json, so not copied: notes.txt, old/model.bin" in lines


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
    s3_store.upload(prefix, _revision(_model_files()))
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
    azure_store.upload(prefix, _revision(_model_files()))
    wrong_key = "A" * 86 + "=="
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(azure_store.port, wrong_key))
    with pytest.raises(FetchError) as error:
        fetch(azure_store.url(prefix), tmp_path / "model", log=lambda _: None)
    assert str(error.value).startswith(f"source {azure_store.url(prefix)}: access denied")
    assert "Server failed to authenticate the request" in str(error.value)


def test_a_source_naming_a_single_file_is_refused(store: Store, tmp_path: Path) -> None:
    prefix = _prefix()
    store.upload(prefix, {"model.gguf": b"GGUF"})
    url = store.url(f"{prefix}/model.gguf")
    with pytest.raises(FetchError, match=r"is a file; it must name a directory of model files"):
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


def test_a_same_size_file_with_other_bytes_is_refetched(tmp_path: Path) -> None:
    files = _model_files()
    source = LocalStore(tmp_path / "source")
    source.upload("tiny", _revision(files))
    target = tmp_path / "model"
    fetch(source.url("tiny"), target, log=lambda _: None)

    damaged = bytearray(files["model.safetensors"])
    damaged[0] ^= 0xFF
    (target / "model.safetensors").write_bytes(bytes(damaged))

    assert fetch(source.url("tiny"), target, log=lambda _: None).fetched == ["model.safetensors"]
    assert _tree(target) == _revision(files)


def test_a_manifest_naming_a_missing_file_fails_naming_it(tmp_path: Path) -> None:
    files = _model_files()
    listed = {**files, "model-00002.safetensors": b"x"}
    source = LocalStore(tmp_path / "source")
    source.upload("tiny", {**files, "manifest.json": _manifest(listed).to_json()})
    with pytest.raises(FetchError, match=r"manifest.json lists 'model-00002.safetensors', which is missing"):
        fetch(source.url("tiny"), tmp_path / "model", log=lambda _: None)
    assert not (tmp_path / "model").exists()


def test_a_malformed_manifest_fails_naming_the_field(tmp_path: Path) -> None:
    document = json.loads(_manifest(_model_files()).to_json())
    document["files"]["config.json"]["sha256"] = "not-a-hash"
    source = LocalStore(tmp_path / "source")
    source.upload("tiny", {**_model_files(), "manifest.json": json.dumps(document).encode()})
    with pytest.raises(FetchError) as error:
        fetch(source.url("tiny"), tmp_path / "model", log=lambda _: None)
    assert str(error.value) == (f"{source.url('tiny')} manifest.json: files['config.json'].sha256 must be 64 hex "
                                "digits (got 'not-a-hash')")


def test_a_target_holding_files_of_another_revision_is_refused(tmp_path: Path) -> None:
    source = LocalStore(tmp_path / "source")
    source.upload("tiny", _revision(_model_files()))
    target = tmp_path / "model"
    LocalStore(target).upload("", {"pytorch_model.bin": b"old weights", ".cache/x": b"hidden: not counted"})
    with pytest.raises(FetchError) as error:
        fetch(source.url("tiny"), target, log=lambda _: None)
    assert str(error.value) == (f"target {target}: holds files that model 'tiny' revision 'r1' does not list "
                                "(pytorch_model.bin); fetch into an empty directory")


def test_a_failed_fetch_of_a_new_revision_leaves_no_manifest_of_the_old_one(tmp_path: Path) -> None:
    """The directory holds r1; r2 changes the weights but its object is damaged: the directory, part r1 and
    part r2 now, must not claim to be r1 (nor r2)."""
    files = _model_files()
    source = LocalStore(tmp_path / "source")
    source.upload("r1", _revision(files))
    target = tmp_path / "model"
    fetch(source.url("r1"), target, revision="r1", log=lambda _: None)

    new_files = {**files, "config.json": b'{"model_type": "llama", "hidden_size": 128}',
                 "model.safetensors": files["model.safetensors"][::-1]}
    damaged = b"\0" * len(files["model.safetensors"])
    source.upload("r2", {**_revision(new_files, revision="r2"), "model.safetensors": damaged})
    with pytest.raises(FetchError, match=r"model\.safetensors: sha256 mismatch"):
        fetch(source.url("r2"), target, revision="r2", log=lambda _: None)

    assert (target / "config.json").read_bytes() == new_files["config.json"]  # verified, kept for a retry
    assert not (target / "manifest.json").exists()
    with pytest.raises(ManifestError, match=r"has no manifest\.json, and revision 'r1' is configured"):
        check_served_model(target, "tiny", "r1")


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
    remote = RemoteFile("model.safetensors", "models/tiny/model.safetensors", 10 * fetch_module.CHUNK_BYTES,
                        "0" * 64)
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


def test_the_command_copies_a_local_revision(tmp_path: Path) -> None:
    LocalStore(tmp_path).upload("source", _revision(_model_files()))
    source = tmp_path / "source"
    result = subprocess.run(
        [sys.executable, "-m", "serving.fetch", f"file://{source}", str(tmp_path / "copy"),
         "--name", "tiny", "--revision", "r1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _tree(tmp_path / "copy") == _tree(source)
    assert result.stdout.startswith(f"file://{source}: model tiny revision r1, 3 files, ")
    assert result.stdout.rstrip().endswith(f"{tmp_path / 'copy'}: 3 fetched, 0 already complete")


def test_long_copies_report_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(fetch_module, "PROGRESS_EVERY_S", 0.0)
    LocalStore(tmp_path).upload("source", _revision({"model.safetensors": bytes(256 * 1024)}))
    lines: list[str] = []
    fetch(str(tmp_path / "source"), tmp_path / "model", log=lines.append)
    assert "  model.safetensors: 128.0 KiB of 256.0 KiB" in lines
