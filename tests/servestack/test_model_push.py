"""`servestack model push` against real storage emulators on 127.0.0.1 (tests/storage.py) and a local
directory: round trips through serving.fetch, resuming, immutable revisions, and finding the bucket."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servestack import model_push
from servestack.cli import main
from servestack.offline.plan import ROOT
from serving import fetch as fetch_module
from serving.fetch import FetchError, fetch
from serving.manifest import FileEntry, Manifest, check_served_model, content_revision
from tests.infra.plans import stack_variant
from tests.storage import LocalStore, S3Store, Store

FILES = {
    "config.json": b'{"model_type": "llama", "hidden_size": 64}',
    "generation_config.json": b'{"max_new_tokens": 32}',
    "model.safetensors": hashlib.sha256(b"weights").digest() * 3000,
    "tokenizer/tokenizer.json": b'{"version": "1.0"}',
}
PENDING = ".manifest.pending.json"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return _write(tmp_path / "model", FILES)


def _write(root: Path, files: dict[str, bytes]) -> Path:
    LocalStore(root).upload("", files)
    return root


def _manifest(files: dict[str, bytes], revision: str) -> Manifest:
    entries = {name: FileEntry(len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()}
    return Manifest("tiny", revision, entries)


def _tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def _push(model: Path, *args: str) -> int:
    return main(["model", "push", "--stack", "aws-prod", *args, str(model)])


def _uploads(monkeypatch: pytest.MonkeyPatch, model: Path, stop_after: int | None = None) -> list[str]:
    """The files the push sends from now on, by their paths in MODEL; with `stop_after`, the push is
    interrupted (Ctrl-C) when it starts sending the next one."""
    sent: list[str] = []

    def open_filesystem(source: Any) -> Any:
        fs = fetch_module.open_filesystem(source)
        put_file: Callable[..., None] = fs.put_file

        def counted(lpath: str, rpath: str, **kwargs: Any) -> None:
            if stop_after is not None and len(sent) == stop_after:
                raise KeyboardInterrupt
            put_file(lpath, rpath, **kwargs)
            sent.append(Path(lpath).relative_to(model).as_posix())

        fs.put_file = counted
        return fs

    monkeypatch.setattr(model_push, "open_filesystem", open_filesystem)
    return sent


def _fetched(store: Store, revision: str, target: Path) -> dict[str, bytes]:
    fetch(store.url(f"models/tiny/{revision}"), target, name="tiny", revision=revision, log=lambda _: None)
    return _tree(target)


# --- against each backend ---------------------------------------------------------------------------


def test_push_then_fetch_gives_the_directory_and_its_manifest(
    store: Store, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r2") == 0

    out = capsys.readouterr().out
    url = store.url("models/tiny/r2")
    assert f"pushed model tiny revision r2 to {url} (4 files, " in out
    assert ": 4 uploaded)" in out
    assert "pulumi config set --path servestack:model.revision r2 --stack aws-prod" in out
    assert store.names("models/tiny/r2") == {*FILES, "manifest.json"}  # no record of the push left behind
    target = tmp_path / "fetched"
    assert _fetched(store, "r2", target) == {**FILES, "manifest.json": _manifest(FILES, "r2").to_json()}
    assert check_served_model(target, "tiny", "r2") == _manifest(FILES, "r2")


def test_an_interrupted_push_resumes_sending_only_the_rest(
    store: Store, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _uploads(monkeypatch, model_dir, stop_after=2)
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r3") == 1
    assert capsys.readouterr().err.startswith("interrupted: run the same command again to resume")
    assert first == ["config.json", "generation_config.json"]
    # No manifest: the `up` wait and every fetch see no revision yet.
    assert store.names("models/tiny/r3") == {*first, PENDING}
    with pytest.raises(FetchError, match=r"no manifest\.json"):
        fetch(store.url("models/tiny/r3"), tmp_path / "early", log=lambda _: None)

    rest = _uploads(monkeypatch, model_dir)
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r3") == 0

    assert rest == ["model.safetensors", "tokenizer/tokenizer.json"]
    assert "2 uploaded, 2 already there from an earlier run" in capsys.readouterr().out
    assert store.names("models/tiny/r3") == {*FILES, "manifest.json"}
    assert _fetched(store, "r3", tmp_path / "fetched") == {**FILES, "manifest.json": _manifest(FILES, "r3").to_json()}


def test_pushing_the_same_content_again_uploads_nothing_and_says_so(
    store: Store, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r4") == 0
    capsys.readouterr()

    sent = _uploads(monkeypatch, model_dir)
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r4") == 0

    assert sent == []
    out = capsys.readouterr().out
    assert f"model tiny revision r4 is already in {store.url('models/tiny/r4')} (4 files, " in out
    assert "): nothing to upload" in out


def test_other_content_under_an_existing_revision_is_refused(
    store: Store, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r5") == 0
    capsys.readouterr()
    (model_dir / "config.json").write_bytes(b'{"model_type": "llama", "hidden_size": 128}')
    (model_dir / "special_tokens_map.json").write_bytes(b"{}")

    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r5") == 1

    assert capsys.readouterr().err == (
        f"error: {store.url('models/tiny/r5')} already holds revision 'r5' with other content (config.json "
        "differs, special_tokens_map.json is new); revisions are immutable: push under another --revision, or "
        "leave --revision out to derive one from the content\n"
    )
    assert _fetched(store, "r5", tmp_path / "fetched") == {**FILES, "manifest.json": _manifest(FILES, "r5").to_json()}


def test_a_resumed_push_of_other_content_never_mixes_the_two(
    store: Store, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Objects of the same sizes but other bytes, left by an interrupted push of other content or put there
    by hand, are sent again: a size alone never vouches for an object."""
    _uploads(monkeypatch, model_dir, stop_after=2)
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r6") == 1
    other = {**FILES, "config.json": b'{"model_type": "llama", "hidden_size": 65}'}  # the same size
    _write(model_dir, other)

    sent = _uploads(monkeypatch, model_dir)
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r6") == 0
    assert sent == ["config.json", "model.safetensors", "tokenizer/tokenizer.json"]
    assert _fetched(store, "r6", tmp_path / "r6") == {**other, "manifest.json": _manifest(other, "r6").to_json()}

    store.upload("models/tiny/r7", {"config.json": FILES["config.json"]})  # by hand, with no push's record
    sent = _uploads(monkeypatch, model_dir)
    assert _push(model_dir, "--bucket", store.bucket, "--revision", "r7") == 0
    assert sent == sorted(other)
    assert _fetched(store, "r7", tmp_path / "r7") == {**other, "manifest.json": _manifest(other, "r7").to_json()}
    capsys.readouterr()


# --- local ------------------------------------------------------------------------------------------


def test_the_default_revision_is_derived_from_the_content(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = tmp_path / "bucket"
    assert _push(model_dir, "--bucket", str(bucket)) == 0
    revision = content_revision(_manifest(FILES, "r1").files)
    out = capsys.readouterr().out
    assert f"pushed model tiny revision {revision} to {bucket}/models/tiny/{revision} (4 files" in out
    assert (f"to serve it:       pulumi config set --path servestack:model.revision {revision} --stack aws-prod\n"
            f"or as a canary:    pulumi config set --path servestack:serving.canary.revision {revision} "
            "--stack aws-prod\n"
            "                   pulumi config set --path servestack:serving.canary.weight 10 --stack aws-prod") in out
    written = bucket / "models" / "tiny" / revision / "manifest.json"
    assert written.read_bytes() == _manifest(FILES, revision).to_json()


def test_the_report_says_when_the_stack_serves_the_revision_or_its_image(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = str(tmp_path / "bucket")
    assert _push(model_dir, "--bucket", bucket, "--revision", "r1") == 0  # aws-prod serves r1 from its bucket
    out = capsys.readouterr().out
    assert "stack aws-prod serves this revision (servestack:model.revision)" in out
    assert "pulumi config set" not in out

    assert main(["model", "push", "--stack", "aws-dev", "--bucket", bucket, "--revision", "r2", str(model_dir)]) == 0
    assert ("stack aws-dev serves the model baked into its image: set servestack:model.source to bucket to serve "
            "pushed revisions") in capsys.readouterr().out


def _fake_pulumi(bin_dir: Path, script: str) -> Path:
    """A `pulumi` on PATH that records its arguments and runs SCRIPT."""
    bin_dir.mkdir()
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(f'#!/bin/sh\necho "$@" > {bin_dir}/args\n{script}\n')
    pulumi.chmod(pulumi.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_the_bucket_is_the_stacks_model_bucket_uri_output(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = tmp_path / "bucket"
    bin_dir = _fake_pulumi(tmp_path / "bin", f"echo {bucket}")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    assert _push(model_dir, "--revision", "r2") == 0

    assert (bin_dir / "args").read_text() == "stack output model_bucket_uri --stack aws-prod\n"
    assert _tree(bucket / "models" / "tiny" / "r2") == {**FILES, "manifest.json": _manifest(FILES, "r2").to_json()}


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (None, "error: the Pulumi CLI is not installed, so the bucket of stack aws-prod is unknown; pass --bucket "
               "(s3://BUCKET, gs://BUCKET, "),
        ("echo", "error: stack aws-prod has no model bucket (its model_bucket_uri output is empty); pass --bucket"),
        ("echo \"error: no stack named 'aws-prod' found\" >&2; exit 255",
         "error: `pulumi stack output model_bucket_uri --stack aws-prod` failed (error: no stack named 'aws-prod' "
         "found); pass --bucket"),
    ],
)
def test_without_a_bucket_from_pulumi_the_push_asks_for_one(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    script: str | None, expected: str,
) -> None:  # fmt: skip
    bin_dir = _fake_pulumi(tmp_path / "bin", script) if script is not None else tmp_path
    monkeypatch.setenv("PATH", str(bin_dir))
    assert _push(model_dir) == 1
    assert capsys.readouterr().err.startswith(expected)


def test_a_stack_serving_from_a_uri_gets_the_revision_there(
    s3_store: S3Store, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_store.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", str(tmp_path))  # no Pulumi CLI: not needed
    model = {"name": "tiny", "source": "s3://models/shared/tiny", "revision": "r1"}
    stacks = stack_variant(tmp_path, "aws-prod", "shared", **{"servestack:model": model})

    assert main(["model", "push", "--stack", "shared", "--stacks-dir", str(stacks), "--revision", "r2",
                 str(model_dir)]) == 0  # fmt: skip

    assert s3_store.names("shared/tiny/r2") == {*FILES, "manifest.json"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--stack", "nope"], "error: unknown stack 'nope'"),
        (["--revision", "R1"], "error: --revision 'R1': not a revision; use lower-case letters"),
        (["--name", "Tiny"], "error: --name 'Tiny': not a model name"),
        (["--bucket", "http://example.com/models"], "error: --bucket 'http://example.com/models': unsupported scheme"),
        (["--bucket", "az://models"], "error: --bucket 'az://models': expected az://CONTAINER/PREFIX?account=ACCOUNT"),
    ],
)
def test_bad_arguments_exit_2_naming_them(
    model_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert main(["model", "push", "--stack", "aws-prod", *args, str(model_dir)]) == 2
    assert capsys.readouterr().err.startswith(expected)


def test_a_directory_without_model_files_or_a_stack_without_a_model_name_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "push", "--stack", "aws-prod", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == f"error: DIR {tmp_path / 'missing'}: not a directory\n"
    empty = _write(tmp_path / "empty", {".git/HEAD": b"ref"})
    assert main(["model", "push", "--stack", "aws-prod", str(empty)]) == 2
    assert capsys.readouterr().err == (f"error: DIR {empty}: no model files in it (hidden files are not part of a "
                                       "revision)\n")

    stacks = stack_variant(tmp_path, "aws-prod", "nameless", **{"servestack:model": {"source": "bucket"}})
    model = _write(tmp_path / "model", FILES)
    assert main(["model", "push", "--stack", "nameless", "--stacks-dir", str(stacks), str(model)]) == 2
    assert capsys.readouterr().err == "error: stack nameless names no model (servestack:model.name); pass --name\n"


def test_the_storage_libraries_are_pinned_as_the_serving_image_pins_them() -> None:
    def pins(path: Path) -> dict[str, str]:
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        return dict(line.split("==") for line in lines if "==" in line)

    tools, image = pins(ROOT / "requirements.txt"), pins(ROOT / "serving" / "requirements.txt")
    storage = ("fsspec", "s3fs", "gcsfs", "adlfs", "azure-identity")
    assert {name: tools.get(name) for name in storage} == {name: image[name] for name in storage}
