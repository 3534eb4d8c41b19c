"""Copy a model directory from object storage or a local path into a local directory.

    python -m serving.fetch SOURCE DIR

This is what the deployment's init container runs before the server starts. SOURCE is one of:

    s3://BUCKET/PREFIX                                   Amazon S3 (s3fs)
    gs://BUCKET/PREFIX                                   Google Cloud Storage (gcsfs)
    az://CONTAINER/PREFIX?account=ACCOUNT                Azure Blob Storage (adlfs)
    abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX the same, in Azure's own URI form
    /local/path or file:///local/path                    a local directory

Credentials come from the pod's workload identity through each library's default chain; the image
holds no keys: IRSA (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) for botocore, the GKE metadata server
for gcsfs, azure-identity's DefaultAzureCredential (workload identity) for adlfs. Emulators are reached
through the libraries' standard variables: AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST (anonymous, as
emulators do not authenticate) and AZURE_STORAGE_CONNECTION_STRING.

Files already complete in DIR are skipped. A file counts as complete when its size matches the source
and, where the source has a `manifest.json` ({"files": {"NAME": {"size": N, "sha256": "HEX"}}}), its
sha256 matches too. Each file is written to a temporary name and renamed into place once its size and
hash are verified, so an interrupted copy never leaves a file that looks complete. Expected failures
(missing source, access denied, a size or hash mismatch) exit with status 1 and one clear message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

MANIFEST = "manifest.json"
CHUNK_BYTES = 8 * 1024 * 1024
PROGRESS_EVERY_S = 15.0  # a line per big file now and then, for `kubectl logs` of the init container

_AZURE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_AZURE_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_ABFS_HOST = re.compile(r"(?P<container>[^@]+)@(?P<account>[^.]+)\.(?:dfs|blob)\.core\.windows\.net")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FetchError(Exception):
    """An expected failure: the message says what went wrong and names the source."""


@dataclass(frozen=True)
class Source:
    """A parsed SOURCE: `root` is the directory as its filesystem names it (`bucket/prefix`)."""

    url: str
    protocol: str
    root: str
    account: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    name: str
    path: str
    size: int
    sha256: str | None = None


@dataclass
class FetchReport:
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_fetched: int = 0


def parse_source(url: str) -> Source:
    """Parse and validate SOURCE; raise FetchError naming the value and the accepted forms."""
    forms = (
        "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX?account=ACCOUNT, "
        "abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX or a local directory"
    )
    if "://" not in url:
        return Source(url, "file", os.path.abspath(url))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise FetchError(f"source {url!r}: expected file:///ABSOLUTE/PATH")
        return Source(url, "file", os.path.abspath(parts.path))
    if scheme in ("s3", "gs"):
        if not parts.netloc or parts.query:
            raise FetchError(f"source {url!r}: expected {scheme}://BUCKET/PREFIX")
        return Source(url, scheme, _join(parts.netloc, parts.path))
    if scheme == "az":
        query = parse_qs(parts.query, keep_blank_values=True)
        accounts = query.pop("account", [])
        if query or len(accounts) != 1:
            raise FetchError(f"source {url!r}: expected az://CONTAINER/PREFIX?account=ACCOUNT")
        return _azure_source(url, parts.netloc, parts.path, accounts[0])
    if scheme in ("abfs", "abfss"):
        match = _ABFS_HOST.fullmatch(parts.netloc)
        if match is None or parts.query:
            raise FetchError(f"source {url!r}: expected {scheme}://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX")
        return _azure_source(url, match["container"], parts.path, match["account"])
    raise FetchError(f"source {url!r}: unsupported scheme {scheme!r}; use {forms}")


def _azure_source(url: str, container: str, path: str, account: str) -> Source:
    if not _AZURE_ACCOUNT.fullmatch(account):
        raise FetchError(f"source {url!r}: storage account {account!r} must be 3-24 lowercase letters or digits")
    if not _AZURE_CONTAINER.fullmatch(container):
        raise FetchError(
            f"source {url!r}: container {container!r} must be 3-63 lowercase letters, digits or single hyphens"
        )
    return Source(url, "az", _join(container, path), account)


def _join(bucket: str, path: str) -> str:
    return "/".join(part for part in (bucket, path.strip("/")) if part)


def open_filesystem(source: Source) -> Any:
    """The fsspec filesystem for SOURCE, authenticated by the environment's default chain.

    Instances are never reused from fsspec's cache: credentials and endpoints are read from the
    environment each time."""
    if source.protocol == "s3":
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True)
    if source.protocol == "gs":
        # The plain JSON-API filesystem: gcsfs's default class first probes each bucket's layout over
        # gRPC (for zonal and hierarchical buckets), which a model copy from a standard bucket never needs.
        from gcsfs.core import GCSFileSystem

        # An emulator does not authenticate; without it, the default chain (GKE metadata) applies.
        token = "anon" if os.environ.get("STORAGE_EMULATOR_HOST") else None
        return GCSFileSystem(token=token, skip_instance_cache=True)
    if source.protocol == "az":
        import adlfs

        # With no key in the environment adlfs authenticates through DefaultAzureCredential.
        return adlfs.AzureBlobFileSystem(account_name=source.account, skip_instance_cache=True)
    import fsspec

    return fsspec.filesystem("file")


def list_files(fs: Any, source: Source) -> list[RemoteFile]:
    """Every file under the source, with sizes, and sha256 hashes where the manifest gives them."""
    if source.protocol == "file" and not os.path.exists(source.root):
        raise FetchError(f"source {source.url}: not found (no such file or directory)")
    listing: dict[str, dict[str, Any]] = fs.find(source.root, detail=True)
    if source.root in listing:
        raise FetchError(f"source {source.url}: is a file; SOURCE must name a directory of model files")
    prefix = source.root.rstrip("/") + "/"
    files = {
        path[len(prefix) :]: int(info["size"])
        for path, info in listing.items()
        if path.startswith(prefix) and info.get("type", "file") == "file"
    }
    if not files:
        raise FetchError(f"source {source.url}: not found (no files under it)")
    hashes = _read_manifest(fs, source, prefix + MANIFEST, files) if MANIFEST in files else {}
    return [RemoteFile(name, prefix + name, size, hashes.get(name)) for name, size in sorted(files.items())]


def _read_manifest(fs: Any, source: Source, path: str, sizes: dict[str, int]) -> dict[str, str]:
    where = f"{source.url} {MANIFEST}"
    try:
        with fs.open(path, "rb") as f:
            manifest = json.loads(f.read())
    except ValueError as e:
        raise FetchError(f"{where}: not valid JSON ({e})") from None
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict):
        raise FetchError(f'{where}: expected {{"files": {{"NAME": {{"size": N, "sha256": "HEX"}}}}}}')
    hashes: dict[str, str] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise FetchError(f"{where}: files[{name!r}] must be an object with size and sha256")
        if name not in sizes:
            raise FetchError(f"{where} lists {name!r}, which is missing from the source")
        size, digest = entry.get("size"), entry.get("sha256")
        if size is not None and size != sizes[name]:
            raise FetchError(f"{where}: {name!r} should be {size} bytes, the source has {sizes[name]}")
        if digest is not None:
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
                raise FetchError(f"{where}: files[{name!r}].sha256 must be 64 hex digits (got {digest!r})")
            hashes[name] = digest.lower()
    return hashes


def _destination(dest: Path, name: str, source: Source) -> Path:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise FetchError(f"source {source.url}: refusing file name {name!r} outside the target directory")
    return dest.joinpath(*relative.parts)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete(path: Path, remote: RemoteFile) -> bool:
    """Whether the local file already holds this remote file: same size, and same hash when known."""
    if not path.is_file() or path.stat().st_size != remote.size:
        return False
    return remote.sha256 is None or _sha256_of(path) == remote.sha256


def _copy(fs: Any, remote: RemoteFile, target: Path, source: Source, log: Callable[[str], None] = print) -> None:
    """Stream one file to a temporary name, verify it, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    written = 0
    next_report = time.monotonic() + PROGRESS_EVERY_S
    try:
        with fs.open(remote.path, "rb") as src, partial.open("wb") as out:
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
                written += len(chunk)
                if time.monotonic() >= next_report:
                    log(f"  {remote.name}: {_human(written)} of {_human(remote.size)}")
                    next_report += PROGRESS_EVERY_S
            out.flush()
            os.fsync(out.fileno())
        where = f"{source.url}: {remote.name}"
        if written != remote.size:
            raise FetchError(f"{where}: size mismatch, got {written} bytes, expected {remote.size}")
        if remote.sha256 is not None and digest.hexdigest() != remote.sha256:
            raise FetchError(f"{where}: sha256 mismatch, got {digest.hexdigest()}, {MANIFEST} says {remote.sha256}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def fetch(source: str, dest: str | Path, *, log: Callable[[str], None] = print) -> FetchReport:
    """Copy SOURCE into DEST, skipping complete files. Raises FetchError on expected failures."""
    parsed = parse_source(source)
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"target {dest}: exists and is not a directory")
    report = FetchReport()
    storage_errors = _storage_errors(parsed.protocol)
    try:
        fs = open_filesystem(parsed)
        files = list_files(fs, parsed)
        total = sum(f.size for f in files)
        log(f"{parsed.url}: {len(files)} files, {_human(total)}")
        for remote in files:
            target = _destination(dest, remote.name, parsed)
            if is_complete(target, remote):
                report.skipped.append(remote.name)
                log(f"  {remote.name}: already complete, skipped")
                continue
            started = time.monotonic()
            _copy(fs, remote, target, parsed, log)
            seconds = max(time.monotonic() - started, 1e-6)
            report.fetched.append(remote.name)
            report.bytes_fetched += remote.size
            rate = _human(remote.size / seconds)
            log(f"  {remote.name}: {_human(remote.size)} in {seconds:.1f} s ({rate}/s)")
    except storage_errors as e:
        raise FetchError(_explain(parsed, e)) from e
    log(f"{dest}: {len(report.fetched)} fetched, {len(report.skipped)} already complete")
    return report


def _storage_errors(protocol: str) -> tuple[type[Exception], ...]:
    """The exceptions a storage library raises for expected failures (everything else is a bug)."""
    errors: list[type[Exception]] = [OSError]
    if protocol in ("s3", "gs"):
        import aiohttp

        errors.append(aiohttp.ClientError)
    if protocol == "s3":
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        errors += [BotoCoreError, ClientError]
    elif protocol == "gs":
        from google.auth.exceptions import GoogleAuthError

        errors.append(GoogleAuthError)
    elif protocol == "az":
        from azure.core.exceptions import AzureError

        errors.append(AzureError)
    return tuple(errors)


def _explain(source: Source, error: Exception) -> str:
    """One line for a storage error, naming the source; the class decides not-found versus denied."""
    status = getattr(error, "status_code", None)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    kind = type(error).__name__
    if isinstance(error, FileNotFoundError) or status == 404 or kind == "ResourceNotFoundError":
        return f"source {source.url}: not found ({text})"
    if (
        isinstance(error, PermissionError)
        or status in (401, 403)
        or text.startswith("Forbidden")
        or kind in ("ClientAuthenticationError", "NoCredentialsError", "CredentialUnavailableError")
    ):
        return f"source {source.url}: access denied ({kind}: {text})"
    return f"source {source.url}: {kind}: {text}"


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.fetch",
        description="Copy a model directory from s3://, gs://, az:// (abfs://) or a local path into DIR.",
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="s3://, gs://, az://CONTAINER/PATH?account=NAME, "
        "abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH or a local directory",
    )
    parser.add_argument("dir", metavar="DIR", help="local directory to fill")
    args = parser.parse_args(argv)
    try:
        fetch(args.source, args.dir, log=lambda line: print(line, flush=True))
    except FetchError as e:
        print(f"fetch failed: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
