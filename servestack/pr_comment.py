"""Post or update the cost-diff comment on a pull request (the `pr-comment` workflow runs this).

The comment is made by the `preview` workflow, which runs a pull request's code, from forks too, with a
read-only token: it uploads the comment and the pull request's number as an artifact. The `pr-comment`
workflow runs on `workflow_run` with this repository's own code and a token that may write pull requests;
it never runs the pull request's code and reads the artifact as untrusted data:

- the number must be a plain integer, and the pull request it names must have the run's head commit
  (so a run cannot comment on someone else's pull request);
- the body must be UTF-8 text of at most GitHub's 65,536 characters, and is sent as the comment's text;
- one comment per pull request: the one this token's bot wrote with the marker is edited, never repeated.

Only the standard library: the privileged job installs nothing.

    python3 -m servestack.pr_comment --dir ARTIFACT_DIR --head-sha SHA
    (GITHUB_TOKEN, GITHUB_REPOSITORY and GITHUB_API_URL from the environment)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "<!-- servestack-cost-diff -->"
MAX_BODY = 65_536  # GitHub refuses a longer comment body
NUMBER_FILE = "pr-number"
BODY_FILE = "comment.md"
BOT = "github-actions[bot]"  # who GITHUB_TOKEN comments as
PAGE = 100  # comments per page, GitHub's maximum
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_SHA = re.compile(r"[0-9a-f]{40}")
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class CommentError(Exception):
    """The artifact or the pull request is not what a comment may be posted for."""


class NotThisHead(CommentError):
    """The pull request's head is another commit: a newer push (whose run will comment), or another pull
    request's number in the artifact. Nothing is posted; not a failure."""


def read_artifact(directory: Path) -> tuple[int, str]:
    """The pull request number and the comment body from the artifact's directory, validated."""
    try:
        raw_number = (directory / NUMBER_FILE).read_bytes()[:64].decode("ascii").strip()
        raw_body = (directory / BODY_FILE).read_bytes()
    except (OSError, UnicodeDecodeError) as error:
        raise CommentError(f"artifact {directory}: needs {NUMBER_FILE} (digits) and {BODY_FILE}: {error}") from error
    if not _NUMBER.fullmatch(raw_number):
        raise CommentError(f"{NUMBER_FILE}: {raw_number[:20]!r} is not a pull request number (a positive integer)")
    try:
        body = raw_body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CommentError(f"{BODY_FILE}: not UTF-8 text ({error})") from error
    if not body.startswith(MARKER):  # the marker is how the comment is found again
        body = f"{MARKER}\n{body}"
    if len(body) > MAX_BODY:
        raise CommentError(f"{BODY_FILE}: {len(body):,} characters, more than GitHub's {MAX_BODY:,}")
    return int(raw_number), body


@dataclass(frozen=True)
class GitHub:
    """The few REST calls the comment needs."""

    api_url: str
    repo: str
    token: str

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.api_url.rstrip('/')}/repos/{self.repo}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28", "Content-Type": "application/json",
                     "User-Agent": "servestack-pr-comment"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode("utf-8", "replace")
            raise CommentError(f"{method} {path}: HTTP {error.code} {detail}") from error


def upsert(github: GitHub, number: int, body: str, head_sha: str, bot: str = BOT) -> tuple[str, int]:
    """Edit this bot's marked comment on pull request `number`, or create it; ("updated"|"created", id).

    Raises NotThisHead unless the pull request's head commit is `head_sha`, the one the artifact was made from.
    """
    pull = github.call("GET", f"/pulls/{number}")
    if (pull.get("head") or {}).get("sha") != head_sha:
        raise NotThisHead(f"pull request #{number} is at {(pull.get('head') or {}).get('sha')}, not {head_sha}: "
                           "the artifact names another pull request, or a newer commit superseded this run")
    page = 1
    while True:
        comments = github.call("GET", f"/issues/{number}/comments?per_page={PAGE}&page={page}")
        for comment in comments:
            if (comment.get("user") or {}).get("login") == bot and str(comment.get("body", "")).startswith(MARKER):
                github.call("PATCH", f"/issues/comments/{int(comment['id'])}", {"body": body})
                return "updated", int(comment["id"])
        if len(comments) < PAGE:
            break
        page += 1
    created = github.call("POST", f"/issues/{number}/comments", {"body": body})
    return "created", int(created["id"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m servestack.pr_comment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="the downloaded artifact's directory")
    parser.add_argument("--head-sha", required=True, help="the head commit of the run that made the artifact")
    args = parser.parse_args(argv)
    repo, token = os.environ.get("GITHUB_REPOSITORY", ""), os.environ.get("GITHUB_TOKEN", "")
    try:
        if not _SHA.fullmatch(args.head_sha):
            raise CommentError(f"--head-sha: {args.head_sha[:50]!r} is not a 40-hex-digit commit")
        if not _REPO.fullmatch(repo) or not token:
            raise CommentError("GITHUB_REPOSITORY (owner/name) and GITHUB_TOKEN must be set")
        number, body = read_artifact(args.dir)
        github = GitHub(os.environ.get("GITHUB_API_URL", "https://api.github.com"), repo, token)
        action, comment_id = upsert(github, number, body, args.head_sha)
    except NotThisHead as error:
        print(f"nothing posted: {error}")
        return 0
    except CommentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{action} comment {comment_id} on pull request #{number}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
