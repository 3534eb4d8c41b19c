"""serving.manifest: building, writing and reading a revision's manifest, its checks, the server's check at
start, and its command line (the image build's)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from infra import config
from serving.manifest import (
    MANIFEST,
    REVISION,
    FileEntry,
    Manifest,
    ManifestError,
    build,
    check_served_model,
    content_revision,
    main,
    parse,
    read,
    verify_directory,
    write,
)

FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": bytes(range(256)) * 40,
    "tokenizer/tokenizer.json": b'{"version": "1.0"}',
}


def _directory(root: Path, files: dict[str, bytes] = FILES) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _entries(files: dict[str, bytes] = FILES) -> dict[str, FileEntry]:
    return {name: FileEntry(len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()}


def test_build_lists_every_model_file_with_size_and_sha256_and_skips_hidden_ones(tmp_path: Path) -> None:
    hidden = {".git/HEAD": b"ref", ".gitattributes": b"*", "tokenizer/.partial": b"x", "manifest.json": b"{"}
    model = _directory(tmp_path / "model", {**FILES, **hidden})
    (model / "link.safetensors").symlink_to(model / "model.safetensors")  # as in a Hugging Face cache
    hashed: list[int] = []

    manifest = build(model, "tiny", "r1", on_bytes=hashed.append)

    weights = _entries()["model.safetensors"]
    assert manifest == Manifest("tiny", "r1", {**_entries(), "link.safetensors": weights})
    assert sum(hashed) == sum(len(data) for data in FILES.values()) + weights.size
    assert manifest.total_size == sum(hashed)


def test_write_then_read_gives_the_same_manifest_and_the_same_bytes(tmp_path: Path) -> None:
    model = _directory(tmp_path / "model")
    manifest = build(model, "tiny", "r1")

    path = write(manifest, model)

    assert path == model / MANIFEST
    assert read(model) == manifest
    assert path.read_bytes() == manifest.to_json() == build(model, "tiny", "r1").to_json()
    files = {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in FILES.items()}
    assert json.loads(path.read_bytes()) == {"name": "tiny", "revision": "r1", "files": files}
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "manifest.json", "model.safetensors", "tokenizer"]
    assert read(tmp_path) is None


def test_the_content_revision_is_a_valid_revision_that_changes_with_the_content(tmp_path: Path) -> None:
    revision = build(_directory(tmp_path / "a"), "tiny").revision
    assert REVISION.fullmatch(revision) and len(revision) == 12
    assert revision == content_revision(_entries())
    assert build(_directory(tmp_path / "b"), "other-name").revision == revision  # the files alone decide it

    changed = {**FILES, "config.json": b'{"model_type": "llamb"}'}
    renamed = {("config2.json" if k == "config.json" else k): v for k, v in FILES.items()}
    assert content_revision(_entries(changed)) != revision
    assert content_revision(_entries(renamed)) != revision


def test_the_revision_pattern_is_the_stack_configs() -> None:
    assert config._REVISION.pattern == f"^{REVISION.pattern}$"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: "not json", "not valid JSON"),
        (lambda d: [d], 'expected an object {"name": ..., "revision": ..., "files": {...}}'),
        (lambda d: {**d, "name": None}, "name None is not a model name"),
        (lambda d: {**d, "name": "Tiny Model"}, "name 'Tiny Model' is not a model name"),
        (lambda d: {k: v for k, v in d.items() if k != "revision"}, "revision None is not a revision"),
        (lambda d: {**d, "revision": "-r1"}, "revision '-r1' is not a revision"),
        (lambda d: {**d, "files": {}}, "files must be a non-empty object"),
        (lambda d: {**d, "files": {"../x": d["files"]["config.json"]}}, "files['../x'] is not a model file's path"),
        (lambda d: {**d, "files": {"/etc/x": d["files"]["config.json"]}}, "files['/etc/x'] is not a model file's path"),
        (lambda d: {**d, "files": {".git/x": d["files"]["config.json"]}}, "files['.git/x'] is not a model file's path"),
        (lambda d: {**d, "files": {"a//b": d["files"]["config.json"]}}, "files['a//b'] is not a model file's path"),
        (lambda d: {**d, "files": {MANIFEST: d["files"]["config.json"]}},
         "files['manifest.json'] is not a model file's path"),
        (lambda d: {**d, "files": {"config.json": 3}}, "files['config.json'] must be an object with size and sha256"),
        (lambda d: {**d, "files": {"config.json": {"sha256": "0" * 64}}},
         "files['config.json'].size must be a whole number of bytes (got None)"),
        (lambda d: {**d, "files": {"config.json": {"size": True, "sha256": "0" * 64}}},
         "files['config.json'].size must be a whole number of bytes (got True)"),
        (lambda d: {**d, "files": {"config.json": {"size": -1, "sha256": "0" * 64}}},
         "files['config.json'].size must be a whole number of bytes (got -1)"),
        (lambda d: {**d, "files": {"config.json": {"size": 1, "sha256": "abc"}}},
         "files['config.json'].sha256 must be 64 hex digits (got 'abc')"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_file_and_the_field(change: Any, expected: str) -> None:
    document = json.loads(Manifest("tiny", "r1", _entries()).to_json())
    changed = change(document)
    data = changed.encode() if isinstance(changed, str) else json.dumps(changed).encode()
    with pytest.raises(ManifestError) as error:
        parse(data, "s3://models/models/tiny/r1 manifest.json")
    assert str(error.value).startswith(f"s3://models/models/tiny/r1 manifest.json: {expected}")


def test_a_manifest_may_carry_more_keys_and_upper_case_hashes() -> None:
    document = json.loads(Manifest("tiny", "r1", _entries()).to_json())
    document["created"] = "2026-11-29"
    document["files"]["config.json"]["sha256"] = document["files"]["config.json"]["sha256"].upper()
    assert parse(json.dumps(document).encode(), "m") == Manifest("tiny", "r1", _entries())


def test_verify_names_missing_extra_resized_and_changed_files(tmp_path: Path) -> None:
    model = _directory(tmp_path / "model")
    manifest = build(model, "tiny", "r1")
    verify_directory(manifest, model)

    (model / "tokenizer" / "tokenizer.json").unlink()
    (model / "notes.txt").write_bytes(b"extra")
    (model / "config.json").write_bytes(b"{}")
    weights = bytearray(FILES["model.safetensors"])
    weights[0] ^= 1
    (model / "model.safetensors").write_bytes(bytes(weights))

    with pytest.raises(ManifestError) as error:
        verify_directory(manifest, model)
    changed = hashlib.sha256(weights).hexdigest()
    assert str(error.value) == (
        f"{model} does not hold model 'tiny' revision 'r1' as its manifest.json lists it: "
        "missing tokenizer/tokenizer.json; notes.txt is not in the manifest; "
        f"config.json is 2 bytes, the manifest says {len(FILES['config.json'])}; "
        f"model.safetensors has sha256 {changed}, the manifest says {manifest.files['model.safetensors'].sha256}"
    )
    sizes = r"notes\.txt is not in the manifest; config\.json is 2 bytes"
    with pytest.raises(ManifestError, match=sizes) as sizes_only:
        verify_directory(manifest, model, hashes=False)
    assert "sha256" not in str(sizes_only.value)


def test_a_long_list_of_problems_names_five_and_counts_the_rest(tmp_path: Path) -> None:
    files = {f"shard-{i}.safetensors": b"x" for i in range(7)}
    manifest = Manifest("tiny", "r1", _entries(files))
    with pytest.raises(ManifestError) as error:
        verify_directory(manifest, _directory(tmp_path / "model", {}))
    assert str(error.value).endswith("missing shard-3.safetensors; missing shard-4.safetensors; and 2 more")


# --- the server's check at start --------------------------------------------------------------------


def test_the_server_accepts_the_configured_revision_and_returns_its_manifest(tmp_path: Path) -> None:
    model = _directory(tmp_path / "model")
    manifest = build(model, "tiny", "r1")
    write(manifest, model)
    assert check_served_model(model, "tiny", "r1") == manifest
    assert check_served_model(model, None, None) == manifest  # nothing configured: any whole revision


def test_the_server_refuses_a_model_without_a_manifest_when_a_revision_is_configured(tmp_path: Path) -> None:
    model = _directory(tmp_path / "model")
    with pytest.raises(ManifestError) as error:
        check_served_model(model, "tiny", "r1")
    assert str(error.value).startswith(f"{model} has no manifest.json, and revision 'r1' is configured "
                                       "(SERVESTACK_MODEL_REVISION)")
    assert check_served_model(model, "tiny", None) is None  # a model directory run by hand


@pytest.mark.parametrize(
    ("name", "revision", "expected"),
    [
        ("tiny", "r2", "is model 'tiny' revision 'r1', expected revision 'r2'"),
        ("smollm2", "r1", "is model 'tiny' revision 'r1', expected model 'smollm2'"),
        ("smollm2", "r2", "is model 'tiny' revision 'r1', expected model 'smollm2' revision 'r2'"),
        ("smollm2", None, "is model 'tiny' revision 'r1', expected model 'smollm2'"),
    ],
)
def test_the_server_refuses_another_model_or_revision_naming_both(
    tmp_path: Path, name: str, revision: str | None, expected: str
) -> None:
    model = _directory(tmp_path / "model")
    write(build(model, "tiny", "r1"), model)
    with pytest.raises(ManifestError) as error:
        check_served_model(model, name, revision)
    assert str(error.value) == f"{model / MANIFEST} {expected}"


def test_the_server_refuses_a_directory_missing_a_file_of_its_revision(tmp_path: Path) -> None:
    model = _directory(tmp_path / "model")
    write(build(model, "tiny", "r1"), model)
    (model / "model.safetensors").unlink()
    with pytest.raises(ManifestError, match=r"does not hold model 'tiny' revision 'r1' .*: missing model\.safetensors"):
        check_served_model(model, "tiny", "r1")


# --- the command line (the image build) -------------------------------------------------------------


def test_the_command_writes_the_manifest_and_prints_the_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _directory(tmp_path / "model")
    assert main([str(model), "--name", "tiny"]) == 0
    revision = capsys.readouterr().out.strip()
    assert revision == content_revision(_entries())
    assert read(model) == Manifest("tiny", revision, _entries())

    assert main([str(model), "--name", "tiny", "--revision", "r1"]) == 0
    assert capsys.readouterr().out == "r1\n"
    assert main([str(model), "--check", "--name", "tiny", "--revision", "r1"]) == 0
    assert capsys.readouterr().out == f"{model}: model tiny revision r1, 3 files, verified\n"


def test_the_command_check_fails_on_a_changed_file_or_another_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _directory(tmp_path / "model")
    assert main([str(model), "--check"]) == 1
    assert capsys.readouterr().err == f"manifest: {model}: no manifest.json\n"

    assert main([str(model), "--name", "tiny", "--revision", "r1"]) == 0
    assert main([str(model), "--check", "--revision", "r2"]) == 1
    assert "expected revision 'r2'" in capsys.readouterr().err
    (model / "config.json").write_bytes(b"{}")
    assert main([str(model), "--check"]) == 1
    assert "config.json is 2 bytes" in capsys.readouterr().err


def test_the_command_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _directory(tmp_path / "model")
    with pytest.raises(SystemExit) as exited:
        main([str(model)])
    assert exited.value.code == 2
    assert "--name is required to write a manifest" in capsys.readouterr().err
    assert main([str(model), "--name", "tiny", "--revision", "R1"]) == 1
    assert "revision 'R1' is not a revision" in capsys.readouterr().err
    assert main([str(tmp_path / "no-such-dir"), "--name", "tiny"]) == 1
    assert capsys.readouterr().err == f"manifest: {tmp_path / 'no-such-dir'}: not a directory\n"
