"""Copy one revision of a model from object storage or a local path into a local directory.

    python -m serving.fetch SOURCE DIR [--name NAME] [--revision REVISION]

This is what the deployment's init container runs before the server starts, with the model's name and
revision from the stack config. SOURCE is the revision's directory (`.../models/NAME/REVISION` in the
stack's bucket), one of:

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

SOURCE must hold a `manifest.json` (serving/manifest.py: the model's name, the revision, every file's size
and sha256), which `servestack model push` uploads last. It is read first: a source without one, a manifest
naming another model or revision than --name and --revision, or one listing a file that the source lacks or
holds at another size, fails before anything is copied. Objects under SOURCE that the manifest does not list
(the leftovers of an interrupted push, a note someone dropped there) are named in the log and not copied:
the manifest defines the revision, and a stray object can then neither change what is served nor stop a
pod from starting. A target directory holding files the manifest does not list is refused: one directory
holds one revision.

Files already complete in DIR (same size and sha256) are skipped. Each file is written to a temporary name
and renamed into place once its size and sha256 are verified, and DIR's own manifest.json is written last,
once every file is in place: an interrupted or failed copy (a tampered object fails naming it) leaves
neither a file nor a directory that looks complete. Expected failures (missing source or manifest, access
denied, another model or revision, a size or hash mismatch) exit with status 1 and one clear message.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from serving.manifest import (
    MANIFEST,
    Manifest,
    ManifestError,
    check_identity,
    few,
    model_files,
    parse,
    read,
    sha256_file,
    write,
)

CHUNK_BYTES = 8 * 1024 * 1024
PROGRESS_EVERY_S = 15.0  # a line per big file now and then, for `kubectl logs` of the init container

_AZURE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_AZURE_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_ABFS_HOST = re.compile(r"(?P<container>[^@]+)@(?P<account>[^.]+)\.(?:dfs|blob)\.core\.windows\.net")


class FetchError(Exception):
    """An expected failure: the message says what went wrong and names the source."""


@dataclass(frozen=True)
class Source:
    """A parsed SOURCE: `root` is the directory as its filesystem names it (`bucket/prefix`)."""

    url: str
    protocol: str
    root: str
    account: str | None = None

    def joinpath(self, *parts: str) -> Source:
        """The directory PARTS below this one, named in the same form."""
        if self.protocol == "file" and "://" not in self.url:
            return parse_source(os.path.join(self.url, *parts))
        split = urlsplit(self.url)
        return parse_source(urlunsplit(split._replace(path="/".join([split.path.rstrip("/"), *parts]))))


@dataclass(frozen=True)
class RemoteFile:
    name: str
    path: str
    size: int
    sha256: str


@dataclass
class FetchReport:
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_fetched: int = 0


def parse_source(url: str, what: str = "source") -> Source:
    """Parse and validate SOURCE; raise FetchError naming it (as `what`), the value and the accepted forms."""
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
            raise FetchError(f"{what} {url!r}: expected file:///ABSOLUTE/PATH")
        return Source(url, "file", os.path.abspath(parts.path))
    if scheme in ("s3", "gs"):
        if not parts.netloc or parts.query:
            raise FetchError(f"{what} {url!r}: expected {scheme}://BUCKET/PREFIX")
        return Source(url, scheme, _join(parts.netloc, parts.path))
    if scheme == "az":
        query = parse_qs(parts.query, keep_blank_values=True)
        accounts = query.pop("account", [])
        if query or len(accounts) != 1:
            raise FetchError(f"{what} {url!r}: expected az://CONTAINER/PREFIX?account=ACCOUNT")
        return _azure_source(url, parts.netloc, parts.path, accounts[0], what)
    if scheme in ("abfs", "abfss"):
        match = _ABFS_HOST.fullmatch(parts.netloc)
        if match is None or parts.query:
            raise FetchError(f"{what} {url!r}: expected {scheme}://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX")
        return _azure_source(url, match["container"], parts.path, match["account"], what)
    raise FetchError(f"{what} {url!r}: unsupported scheme {scheme!r}; use {forms}")


def _azure_source(url: str, container: str, path: str, account: str, what: str) -> Source:
    if not _AZURE_ACCOUNT.fullmatch(account):
        raise FetchError(f"{what} {url!r}: storage account {account!r} must be 3-24 lowercase letters or digits")
    if not _AZURE_CONTAINER.fullmatch(container):
        raise FetchError(
            f"{what} {url!r}: container {container!r} must be 3-63 lowercase letters, digits or single hyphens"
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

    # A push into a local directory creates the revision's subdirectories as it writes.
    return fsspec.filesystem("file", auto_mkdir=True, skip_instance_cache=True)


def list_sizes(fs: Any, source: Source, what: str = "source") -> dict[str, int]:
    """Every file under SOURCE by its path relative to it, with its size; empty when there is none."""
    listing: dict[str, dict[str, Any]] = fs.find(source.root, detail=True)
    if source.root in listing:
        raise FetchError(f"{what} {source.url}: is a file; it must name a directory of model files")
    prefix = source.root.rstrip("/") + "/"
    return {
        path[len(prefix) :]: int(info["size"])
        for path, info in listing.items()
        if path.startswith(prefix) and info.get("type", "file") == "file"
    }


def read_manifest(fs: Any, source: Source, sizes: dict[str, int]) -> Manifest:
    """The source's manifest, validated, and checked against the listing: every file it lists is there at
    its size. A source without one is no revision."""
    where = f"{source.url} {MANIFEST}"
    if MANIFEST not in sizes:
        raise FetchError(
            f"source {source.url}: no {MANIFEST}, so no whole model revision is there (a push uploads it last); "
            "push the model directory with `servestack model push --stack STACK --revision REVISION DIR`"
        )
    data = fs.cat_file(f"{source.root.rstrip('/')}/{MANIFEST}")
    try:
        manifest = parse(data, where)
    except ManifestError as e:
        raise FetchError(str(e)) from None
    for name, entry in manifest.files.items():
        if name not in sizes:
            raise FetchError(f"{where} lists {name!r}, which is missing from the source")
        if sizes[name] != entry.size:
            raise FetchError(f"{where}: {name!r} should be {entry.size} bytes, the source has {sizes[name]}")
    return manifest


def _prepare_target(dest: Path, manifest: Manifest) -> None:
    """Refuse a target holding files of another revision; drop a manifest that is not this revision's, as
    the directory is about to change (it comes back last, once every file is in place)."""
    extra = sorted(set(model_files(dest)) - set(manifest.files)) if dest.is_dir() else []
    if extra:
        raise FetchError(f"target {dest}: holds files that model {manifest.name!r} revision "
                         f"{manifest.revision!r} does not list ({few(extra)}); fetch into an empty directory")
    try:
        same = read(dest) == manifest
    except ManifestError:
        same = False
    if not same:
        (dest / MANIFEST).unlink(missing_ok=True)


def is_complete(path: Path, remote: RemoteFile) -> bool:
    """Whether the local file already holds this remote file: same size and sha256."""
    return path.is_file() and path.stat().st_size == remote.size and sha256_file(path) == remote.sha256


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
                    log(f"  {remote.name}: {human(written)} of {human(remote.size)}")
                    next_report += PROGRESS_EVERY_S
            out.flush()
            os.fsync(out.fileno())
        where = f"{source.url}: {remote.name}"
        if written != remote.size:
            raise FetchError(f"{where}: size mismatch, got {written} bytes, expected {remote.size}")
        if digest.hexdigest() != remote.sha256:
            raise FetchError(f"{where}: sha256 mismatch, got {digest.hexdigest()}, {MANIFEST} says {remote.sha256}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def fetch(source: str, dest: str | Path, *, name: str | None = None, revision: str | None = None,
          log: Callable[[str], None] = print) -> FetchReport:
    """Copy the revision at SOURCE into DEST, skipping complete files, after checking that its manifest
    names model NAME at REVISION (when given). Raises FetchError on expected failures."""
    parsed = parse_source(source)
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FetchError(f"target {dest}: exists and is not a directory")
    report = FetchReport()
    expected_errors = storage_errors(parsed.protocol)
    try:
        fs = open_filesystem(parsed)
        if parsed.protocol == "file" and not os.path.exists(parsed.root):
            raise FetchError(f"source {parsed.url}: not found (no such file or directory)")
        sizes = list_sizes(fs, parsed)
        if not sizes:
            raise FetchError(f"source {parsed.url}: not found (no files under it)")
        manifest = read_manifest(fs, parsed, sizes)
        try:
            check_identity(manifest, f"{parsed.url} {MANIFEST}", name, revision)
        except ManifestError as e:
            raise FetchError(str(e)) from None
        _prepare_target(dest, manifest)
        prefix = parsed.root.rstrip("/") + "/"
        files = [RemoteFile(path, prefix + path, e.size, e.sha256) for path, e in manifest.files.items()]
        log(f"{parsed.url}: model {manifest.name} revision {manifest.revision}, {len(files)} files, "
            f"{human(manifest.total_size)}")
        unlisted = sorted(set(sizes) - set(manifest.files) - {MANIFEST})
        if unlisted:
            log(f"  not in {MANIFEST}, so not copied: {few(unlisted)}")
        for remote in files:
            target = dest.joinpath(*remote.name.split("/"))
            if is_complete(target, remote):
                report.skipped.append(remote.name)
                log(f"  {remote.name}: already complete, skipped")
                continue
            started = time.monotonic()
            _copy(fs, remote, target, parsed, log)
            seconds = max(time.monotonic() - started, 1e-6)
            report.fetched.append(remote.name)
            report.bytes_fetched += remote.size
            rate = human(remote.size / seconds)
            log(f"  {remote.name}: {human(remote.size)} in {seconds:.1f} s ({rate}/s)")
    except expected_errors as e:
        raise FetchError(explain(parsed, e)) from e
    write(manifest, dest)  # last: with it, the directory holds the whole revision
    log(f"{dest}: {len(report.fetched)} fetched, {len(report.skipped)} already complete")
    return report


def storage_errors(protocol: str) -> tuple[type[Exception], ...]:
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


def explain(source: Source, error: Exception, what: str = "source") -> str:
    """One line for a storage error, naming the source (as `what`); the class decides not-found versus denied."""
    status = getattr(error, "status_code", None)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    kind = type(error).__name__
    if isinstance(error, FileNotFoundError) or status == 404 or kind == "ResourceNotFoundError":
        return f"{what} {source.url}: not found ({text})"
    if (
        isinstance(error, PermissionError)
        or status in (401, 403)
        or text.startswith("Forbidden")
        or kind in ("ClientAuthenticationError", "NoCredentialsError", "CredentialUnavailableError")
    ):
        return f"{what} {source.url}: access denied ({kind}: {text})"
    return f"{what} {source.url}: {kind}: {text}"


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.fetch",
        description="Copy one revision of a model (a directory with a manifest.json) from s3://, gs://, "
        "az:// (abfs://) or a local path into DIR, verifying every file.",
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="s3://, gs://, az://CONTAINER/PATH?account=NAME, "
        "abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH or a local directory",
    )
    parser.add_argument("dir", metavar="DIR", help="local directory to fill")
    parser.add_argument("--name", help="refuse a source whose manifest names another model")
    parser.add_argument("--revision", help="refuse a source whose manifest names another revision")
    args = parser.parse_args(argv)
    try:
        fetch(args.source, args.dir, name=args.name, revision=args.revision,
              log=lambda line: print(line, flush=True))
    except FetchError as e:
        print(f"fetch failed: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
