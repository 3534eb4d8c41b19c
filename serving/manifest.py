"""The manifest of a model revision, and every check made against it.

A revision is one immutable set of model files. `manifest.json` at its root names it and lists its files:

    {"name": "tiny", "revision": "3f2a9c0d1e4b",
     "files": {"config.json": {"size": 43, "sha256": "9f86d0..."},
               "tokenizer/tokenizer.json": {"size": 18, "sha256": "2c26b4..."}}}

Wherever a revision is put (the bucket by `servestack model push`, the pod's model directory by
`python -m serving.fetch`, the image's model directory at build time) the manifest is written last, so that
a manifest's presence means the revision is whole. Its users:

    servestack model push       builds it from a directory (`build`), uploads the files, then it
    python -m serving.fetch     reads it (`parse`), checks name and revision (`check_identity`), verifies every
                                file it copies against it
    the image build             `python -m serving.manifest DIR --name NAME [--revision REV]` writes it
                                for a baked model (`--check` verifies a directory against its manifest)
    the server at start         `check_served_model(MODEL_PATH, name, revision)` refuses any other revision

Hidden files and directories (a path part starting with '.': .git, .cache, a fetch's partial copies) are
never part of a revision. A revision that is not given is derived from the content (`content_revision`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
CHUNK_BYTES = 8 * 1024 * 1024

# A model name and a revision are path segments in the bucket (`models/<name>/<revision>/`); a revision is
# also a Kubernetes label value. The stack config (infra/config.py) accepts the same forms.
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
REVISION = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAMED = 5  # files named in one message; the rest are counted


class ManifestError(Exception):
    """An expected failure: the message names the manifest or the directory, and the field or the file."""


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    revision: str
    files: Mapping[str, FileEntry]

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> bytes:
        """The file's bytes: the same manifest always gives the same bytes."""
        files = {path: {"size": e.size, "sha256": e.sha256} for path, e in sorted(self.files.items())}
        document = {"name": self.name, "revision": self.revision, "files": files}
        return (json.dumps(document, indent=2) + "\n").encode()


def content_revision(files: Mapping[str, FileEntry]) -> str:
    """A revision derived from the files' paths, sizes and hashes: 12 hex digits of their digest."""
    listing = {path: [entry.size, entry.sha256] for path, entry in files.items()}
    canonical = json.dumps(listing, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:12]


def model_files(directory: Path) -> dict[str, int]:
    """The revision's files in a local directory, by relative POSIX path, with their sizes: everything but
    hidden files and directories and the manifest itself. Symbolic links are followed (a Hugging Face
    cache's snapshots are links to its blobs)."""
    files: dict[str, int] = {}
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(root)
        for name in names:
            path = base / name
            relative = path.relative_to(directory).as_posix()
            if name.startswith(".") or relative == MANIFEST or not path.is_file():
                continue
            files[relative] = path.stat().st_size
    return dict(sorted(files.items()))


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """The file's sha256; `on_bytes` hears of every chunk hashed (progress for big files)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def build(directory: Path, name: str, revision: str | None = None,
          on_bytes: Callable[[int], None] | None = None) -> Manifest:
    """The manifest of a local model directory, hashing every file; the revision is derived from the
    content unless given. Raises ManifestError for a bad name or revision, or a directory without files."""
    where = str(directory)
    if not directory.is_dir():
        raise ManifestError(f"{where}: not a directory")
    _check_name(where, "name", name)
    if revision is not None:
        _check_revision(where, "revision", revision)
    sizes = model_files(directory)
    if not sizes:
        raise ManifestError(f"{where}: no model files in it (hidden files are not part of a revision)")
    files = {path: FileEntry(size, sha256_file(directory / path, on_bytes)) for path, size in sizes.items()}
    return Manifest(name, revision or content_revision(files), files)


def write(manifest: Manifest, directory: Path) -> Path:
    """Write DIRECTORY/manifest.json under a temporary name, then rename it into place."""
    path = directory / MANIFEST
    partial = directory / f".{MANIFEST}.partial"
    try:
        partial.write_bytes(manifest.to_json())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def parse(data: bytes, where: str) -> Manifest:
    """Read and validate a manifest's bytes; `where` names it in every error (a path or a URL)."""
    try:
        document = json.loads(data)
    except ValueError as e:
        raise ManifestError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(document, dict):
        raise ManifestError(f'{where}: expected an object {{"name": ..., "revision": ..., "files": {{...}}}}')
    name = _check_name(where, "name", document.get("name"))
    revision = _check_revision(where, "revision", document.get("revision"))
    entries = document.get("files")
    if not isinstance(entries, dict) or not entries:
        raise ManifestError(f'{where}: files must be a non-empty object {{"PATH": {{"size": N, "sha256": "HEX"}}}}')
    files: dict[str, FileEntry] = {}
    for path, entry in entries.items():
        field = f"files[{path!r}]"
        _check_path(where, field, path)
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: {field} must be an object with size and sha256")
        size, digest = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: {field}.size must be a whole number of bytes (got {size!r})")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
            raise ManifestError(f"{where}: {field}.sha256 must be 64 hex digits (got {digest!r})")
        files[path] = FileEntry(size, digest.lower())
    return Manifest(name, revision, dict(sorted(files.items())))


def read(directory: Path) -> Manifest | None:
    """DIRECTORY's manifest, validated; None when it has none."""
    path = directory / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse(data, str(path))


def check_identity(manifest: Manifest, where: str, name: str | None = None, revision: str | None = None) -> None:
    """Refuse a manifest naming another model or revision than the expected ones (None: anything)."""
    expected = []
    if name is not None and manifest.name != name:
        expected.append(f"model {name!r}")
    if revision is not None and manifest.revision != revision:
        expected.append(f"revision {revision!r}")
    if expected:
        raise ManifestError(f"{where} is model {manifest.name!r} revision {manifest.revision!r}, expected "
                            f"{' '.join(expected)}")


def verify_directory(manifest: Manifest, directory: Path, hashes: bool = True,
                     on_bytes: Callable[[int], None] | None = None) -> None:
    """Refuse a directory that is not exactly the manifest's files: missing or extra files, other sizes
    and, with `hashes`, other contents."""
    present = model_files(directory)
    problems = [f"missing {path}" for path in manifest.files if path not in present]
    problems += [f"{path} is not in the manifest" for path in present if path not in manifest.files]
    for path, entry in manifest.files.items():
        size = present.get(path)
        if size is None:
            continue
        if size != entry.size:
            problems.append(f"{path} is {size} bytes, the manifest says {entry.size}")
        elif hashes and (digest := sha256_file(directory / path, on_bytes)) != entry.sha256:
            problems.append(f"{path} has sha256 {digest}, the manifest says {entry.sha256}")
    if problems:
        raise ManifestError(f"{directory} does not hold model {manifest.name!r} revision {manifest.revision!r} "
                            f"as its {MANIFEST} lists it: {few(problems, '; ')}")


def few(items: Sequence[str], separator: str = ", ") -> str:
    """The first few items of a message's list, and how many more there are."""
    more = f"{separator}and {len(items) - _NAMED} more" if len(items) > _NAMED else ""
    return separator.join(items[:_NAMED]) + more


def check_served_model(model_path: Path, name: str | None, revision: str | None) -> Manifest | None:
    """The server's check at start: MODEL_PATH must hold the configured model and revision.

    With a revision configured (SERVESTACK_MODEL_REVISION), the directory must have a manifest; any manifest
    present must name the configured model (SERVESTACK_MODEL_NAME) and revision, and the directory must hold
    its files at their sizes (the fetch, or the image build, has verified their hashes). Returns the
    manifest, or None for a directory without one when no revision is configured (a model run by hand).
    Raises ManifestError with one line saying what is wrong."""
    manifest = read(model_path)
    if manifest is None:
        if revision is None:
            return None
        raise ManifestError(f"{model_path} has no {MANIFEST}, and revision {revision!r} is configured "
                            "(SERVESTACK_MODEL_REVISION): fill the directory with `python -m serving.fetch`, or "
                            "write its manifest at build time with `python -m serving.manifest`")
    check_identity(manifest, str(model_path / MANIFEST), name, revision)
    verify_directory(manifest, model_path, hashes=False)
    return manifest


def _check_name(where: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ManifestError(f"{where}: {field} {value!r} is not a model name; use lower-case letters, digits, "
                            "'.', '_' and '-' (at most 63 characters)")
    return value


def _check_revision(where: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not REVISION.fullmatch(value):
        raise ManifestError(f"{where}: {field} {value!r} is not a revision; use lower-case letters, digits, "
                            "'.', '_' and '-', starting and ending with a letter or digit (at most 63 characters)")
    return value


def _check_path(where: str, field: str, path: str) -> None:
    parts = path.split("/")
    if (PurePosixPath(path).is_absolute() or "\\" in path or path == MANIFEST
            or any(part in ("", ".", "..") or part.startswith(".") for part in parts)):
        raise ManifestError(f"{where}: {field} is not a model file's path; paths are relative, with '/' "
                            "between parts, no '.', '..' or hidden parts, and not the manifest itself")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.manifest",
        description="Write DIR/manifest.json for a model directory (printing its revision), or with --check "
                    "verify DIR against its manifest.",
    )
    parser.add_argument("dir", metavar="DIR", type=Path, help="the model directory")
    parser.add_argument("--name", help="the model's name (required to write)")
    parser.add_argument("--revision", help="the revision (to write: derived from the content when omitted)")
    parser.add_argument("--check", action="store_true",
                        help="verify DIR against its manifest (sizes and sha256), and its name and revision "
                             "against --name and --revision when given")
    args = parser.parse_args(argv)
    try:
        if args.check:
            manifest = read(args.dir)
            if manifest is None:
                raise ManifestError(f"{args.dir}: no {MANIFEST}")
            check_identity(manifest, str(args.dir / MANIFEST), args.name, args.revision)
            verify_directory(manifest, args.dir)
            print(f"{args.dir}: model {manifest.name} revision {manifest.revision}, {len(manifest.files)} files, "
                  "verified")
            return 0
        if args.name is None:
            parser.error("--name is required to write a manifest")
        manifest = build(args.dir, args.name, args.revision)
        write(manifest, args.dir)
    except ManifestError as e:
        print(f"manifest: {e}", file=sys.stderr)
        return 1
    print(manifest.revision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
