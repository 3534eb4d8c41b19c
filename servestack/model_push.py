"""`servestack model push`: upload a model directory as one revision of a stack's models.

    servestack model push --stack STACK [--revision REVISION] [--name NAME] [--bucket URI] DIR

DIR goes up as `models/<name>/<revision>/` in the stack's bucket (`--bucket`, else the stack's
`model_bucket_uri` output); without --bucket, for a stack whose `model.source` is a URI, as
`<URI>/<revision>`, where its pods fetch it. The name defaults to the stack's `model.name`, the revision
to one derived from the content (serving/manifest.py). The revision's manifest is uploaded last, so that
the first `pulumi up`'s wait and every fetch see only whole revisions.

Revisions are immutable: pushing other content under a revision whose manifest is there is refused, and
pushing the same content again uploads nothing and says so.

Resuming: before the first file goes up, the manifest being completed is recorded beside the files as
`.manifest.pending.json`. Run again with the same content, the push keeps the objects that record vouches
for (same content, whole size) and sends only the rest. An object it cannot vouch for (left by a push of
other content under the same revision, or by hand) is deleted and sent again, so that a revision never
mixes two contents.

Exit codes: 0 pushed or already there; 1 an expected failure, one line saying what to do; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsspec.callbacks import Callback
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from servestack import terminal
from servestack.offline.plan import ROOT, STACKS_DIR, PlanError, read_stack_config
from serving.fetch import FetchError, Source, explain, human, list_sizes, open_filesystem, parse_source, storage_errors
from serving.manifest import MANIFEST, NAME, REVISION, Manifest, ManifestError, build, few, model_files, parse

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
PENDING = ".manifest.pending.json"
BUCKET_FORMS = "s3://BUCKET, gs://BUCKET, abfs://CONTAINER@ACCOUNT.blob.core.windows.net or az://CONTAINER?account=ACCOUNT"


class PushError(Exception):
    """An expected failure: one line saying what is wrong and what to do."""


class UsageError(Exception):
    """A bad argument: the message names it."""


@dataclass
class PushReport:
    destination: Source
    manifest: Manifest
    uploaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already there, from an interrupted push of this content
    bytes_uploaded: int = 0

    @property
    def already_pushed(self) -> bool:
        return not self.uploaded


def register(commands: Any) -> None:
    """Add the `model` subcommand (`model push`) to the servestack command line."""
    model = commands.add_parser("model", help="model revisions: push a model directory to a stack's bucket")
    actions = model.add_subparsers(dest="action", required=True)
    push_parser = actions.add_parser("push", help="upload a model directory as one revision",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    push_parser.add_argument("dir", metavar="DIR", type=Path, help="the model directory")
    push_parser.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.NAME.yaml)")
    push_parser.add_argument("--name", help="the model's name; default: the stack's servestack:model.name")
    push_parser.add_argument("--revision", help="the revision; default: 12 hex digits derived from the content")
    push_parser.add_argument("--bucket", metavar="URI", help=f"the bucket: {BUCKET_FORMS}; default: the stack's "
                                                            "model_bucket_uri output (`pulumi stack output`)")
    push_parser.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help="where the stack files are")
    push_parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    errors = terminal.errors
    try:
        model = _stack_model(args.stack, args.stacks_dir)
        name, total = _arguments(args, model)
        bucket = parse_source(args.bucket, "--bucket") if args.bucket is not None else None
    except (UsageError, PlanError, FetchError) as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_BAD_INPUT
    try:
        parent = _revisions_parent(args.stack, name, model, bucket)
        with _progress() as progress:
            hashing = progress.add_task("hashing", total=total, files="")
            manifest = build(args.dir, name, args.revision, on_bytes=lambda n: progress.advance(hashing, n))
            progress.update(hashing, files=f"{len(manifest.files)} files")
            report = push(args.dir, manifest, parent.joinpath(manifest.revision), progress)
    except (PushError, FetchError, ManifestError) as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_FAILED
    except KeyboardInterrupt:
        errors.print("[bold red]interrupted:[/] run the same command again to resume; the files already uploaded "
                     "are not sent again", highlight=False)
        return EXIT_FAILED
    _print_report(report, args.stack, model)
    return 0


def push(directory: Path, manifest: Manifest, destination: Source, progress: Progress) -> PushReport:
    """Upload DIRECTORY's files as MANIFEST's revision at DESTINATION, then the manifest. Raises PushError."""
    report = PushReport(destination, manifest)
    fs = open_filesystem(destination)
    try:
        present = list_sizes(fs, destination, "destination")
        final = _final_manifest(fs, destination, present)
        if final is not None and final != manifest:
            raise PushError(_immutable(destination, final, manifest))
        vouching = final if final is not None else _pending_manifest(fs, destination, present)
        for path, entry in manifest.files.items():
            if present.get(path) == entry.size and vouching is not None and vouching.files.get(path) == entry:
                report.kept.append(path)
        missing = [path for path in manifest.files if path not in report.kept]
        if final is not None and not missing:
            return report
        for path in missing:
            if path in present:  # another content's file, or one nothing vouches for
                fs.rm_file(_path(destination, path))
        if final is None and vouching != manifest:
            fs.pipe_file(_path(destination, PENDING), manifest.to_json())
        _upload(fs, directory, destination, manifest, missing, report, progress)
        fs.pipe_file(_path(destination, MANIFEST), manifest.to_json())  # last: now the revision is whole
        if PENDING in present or final is None:
            fs.rm_file(_path(destination, PENDING))
    except storage_errors(destination.protocol) as e:
        raise PushError(explain(destination, e, "destination")) from e
    return report


def _upload(fs: Any, directory: Path, destination: Source, manifest: Manifest, paths: list[str],
            report: PushReport, progress: Progress) -> None:
    total = sum(manifest.files[path].size for path in paths)
    task = progress.add_task("uploading", total=total, files=f"0/{len(paths)} files")
    for count, path in enumerate(paths, start=1):
        size = manifest.files[path].size
        start = report.bytes_uploaded
        fs.put_file(str(directory / path), _path(destination, path), callback=_Progress(progress, task, start))
        report.uploaded.append(path)
        report.bytes_uploaded += size
        progress.update(task, completed=report.bytes_uploaded, files=f"{count}/{len(paths)} files")


class _Progress(Callback):
    """One file's upload, as the storage library reports it, on the bar of all of them."""

    def __init__(self, progress: Progress, task: TaskID, start: int) -> None:
        super().__init__()
        self._progress, self._task, self._start = progress, task, start

    def call(self, *args: Any, **kwargs: Any) -> None:
        self._progress.update(self._task, completed=self._start + (self.value or 0))


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<9}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TextColumn("{task.fields[files]}"), TimeRemainingColumn(), console=terminal.console)


def _path(destination: Source, relative: str) -> str:
    return f"{destination.root.rstrip('/')}/{relative}"


def _final_manifest(fs: Any, destination: Source, present: Mapping[str, int]) -> Manifest | None:
    if MANIFEST not in present:
        return None
    where = f"{destination.url} {MANIFEST}"
    try:
        return parse(fs.cat_file(_path(destination, MANIFEST)), where)
    except ManifestError as e:
        raise PushError(f"{e}; this revision is damaged, and revisions are immutable: push under another "
                        "--revision") from None


def _pending_manifest(fs: Any, destination: Source, present: Mapping[str, int]) -> Manifest | None:
    """The record of an interrupted push; one that cannot be read vouches for nothing."""
    if PENDING not in present:
        return None
    try:
        return parse(fs.cat_file(_path(destination, PENDING)), f"{destination.url} {PENDING}")
    except ManifestError:
        return None


def _immutable(destination: Source, there: Manifest, ours: Manifest) -> str:
    changes = [f"{path} differs" if path in there.files else f"{path} is new"
               for path, entry in ours.files.items() if there.files.get(path) != entry]
    changes += [f"{path} is gone" for path in there.files if path not in ours.files]
    if there.name != ours.name:
        changes.insert(0, f"it is model {there.name!r}, not {ours.name!r}")
    return (f"{destination.url} already holds revision {there.revision!r} with other content ({few(changes)}); "
            "revisions are immutable: push under another --revision, or leave --revision out to derive one "
            "from the content")


def _stack_model(stack: str, stacks_dir: Path) -> Mapping[str, Any]:
    """The stack file's servestack:model object (PlanError for an unknown stack)."""
    model = read_stack_config(stack, stacks_dir).get("servestack:model") or {}
    if not isinstance(model, Mapping):
        raise UsageError(f"stack {stack}: servestack:model must be an object")
    return model


def _arguments(args: argparse.Namespace, model: Mapping[str, Any]) -> tuple[str, int]:
    """Check DIR, the name and the revision; return the model's name and the size of its files."""
    if not args.dir.is_dir():
        raise UsageError(f"DIR {args.dir}: not a directory")
    sizes = model_files(args.dir)
    if not sizes:
        raise UsageError(f"DIR {args.dir}: no model files in it (hidden files are not part of a revision)")
    name = args.name if args.name is not None else model.get("name")
    if name is None:
        raise UsageError(f"stack {args.stack} names no model (servestack:model.name); pass --name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(f"--name {name!r}: not a model name; use lower-case letters, digits, '.', '_' and '-' "
                         "(at most 63 characters)")
    if args.revision is not None and not REVISION.fullmatch(args.revision):
        raise UsageError(f"--revision {args.revision!r}: not a revision; use lower-case letters, digits, '.', '_' "
                         "and '-', starting and ending with a letter or digit (at most 63 characters)")
    return name, sum(sizes.values())


def _revisions_parent(stack: str, name: str, model: Mapping[str, Any], bucket: Source | None) -> Source:
    """Where the model's revisions go: the bucket's models/<name>, or the stack's model URI."""
    source = model.get("source")
    if bucket is None and isinstance(source, str) and "://" in source:
        return parse_source(source, f"stack {stack}: servestack:model.source")
    if bucket is None:
        bucket = parse_source(_bucket_output(stack), f"stack {stack}'s model_bucket_uri output")
    return bucket.joinpath("models", name)


def _bucket_output(stack: str) -> str:
    command = ["pulumi", "stack", "output", "model_bucket_uri", "--stack", stack]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise PushError(f"the Pulumi CLI is not installed, so the bucket of stack {stack} is unknown; pass "
                        f"--bucket ({BUCKET_FORMS})") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise PushError(f"`{' '.join(command)}` failed ({reason}); pass --bucket ({BUCKET_FORMS})")
    uri = result.stdout.strip()
    if not uri:
        raise PushError(f"stack {stack} has no model bucket (its model_bucket_uri output is empty); pass --bucket "
                        f"({BUCKET_FORMS})")
    return uri


def _print_report(report: PushReport, stack: str, model: Mapping[str, Any]) -> None:
    manifest = report.manifest

    def say(line: str) -> None:  # paths and URLs whole, on one line each
        terminal.console.print(line, markup=False, highlight=False, soft_wrap=True)

    what = f"model {manifest.name} revision {manifest.revision}"
    size = f"{len(manifest.files)} files, {human(manifest.total_size)}"
    if report.already_pushed:
        say(f"{what} is already in {report.destination.url} ({size}): nothing to upload")
    else:
        kept = f", {len(report.kept)} already there from an earlier run" if report.kept else ""
        say(f"pushed {what} to {report.destination.url} ({size}: {len(report.uploaded)} uploaded{kept})")
    revision = manifest.revision
    if model.get("revision") == revision:
        say(f"stack {stack} serves this revision (servestack:model.revision)")
        return
    if model.get("source", "image") == "image":
        say(f"stack {stack} serves the model baked into its image: set servestack:model.source to bucket to serve "
            "pushed revisions")
    say(f"to serve it:       pulumi config set --path servestack:model.revision {revision} --stack {stack}\n"
        f"or as a canary:    pulumi config set --path servestack:serving.canary.revision {revision} --stack {stack}\n"
        f"                   pulumi config set --path servestack:serving.canary.weight 10 --stack {stack}")
