"""The poster of the pull request comment, against a stand-in for api.github.com on 127.0.0.1 that answers
as GitHub's REST API does (pull request, paged issue comments, create 201, edit 200, errors with a message)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from servestack.pr_comment import MARKER, MAX_BODY, CommentError, GitHub, NotThisHead, main, read_artifact, upsert
from tests.servestack.conftest import serve_http

REPO = "octo/servestack"
SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"
TOKEN = "ghs_test"


class FakeGitHub:
    """Pull request 7 at SHA; its comments; every request recorded as (method, path?query, body)."""

    def __init__(self) -> None:
        self.comments: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.auth: list[str | None] = []
        self.next_id = 1000
        self.fail_with: int | None = None

    def comment(self, body: str, login: str = "github-actions[bot]") -> dict[str, Any]:
        self.next_id += 1
        created = {"id": self.next_id, "body": body, "user": {"login": login, "type": "Bot" if "[bot]" in login
                                                                else "User"},
                   "html_url": f"https://github.com/{REPO}/pull/7#issuecomment-{self.next_id}"}
        self.comments.append(created)
        return created

    def handle(self, method: str, target: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, target, body))
        if self.fail_with:
            return self.fail_with, {"message": "Resource not accessible by integration",
                                    "documentation_url": "https://docs.github.com/rest"}
        url = urlsplit(target)
        path, query = url.path, parse_qs(url.query)
        base = f"/repos/{REPO}"
        if method == "GET" and path == f"{base}/pulls/7":
            return 200, {"number": 7, "state": "open", "head": {"sha": SHA, "ref": "feature"}}
        if method == "GET" and path.startswith(f"{base}/pulls/"):
            return 404, {"message": "Not Found"}
        if method == "GET" and path == f"{base}/issues/7/comments":
            size, page = int(query["per_page"][0]), int(query["page"][0])
            return 200, self.comments[(page - 1) * size:page * size]
        if method == "POST" and path == f"{base}/issues/7/comments":
            return 201, self.comment(body["body"])
        if method == "PATCH" and path.startswith(f"{base}/issues/comments/"):
            found = next(c for c in self.comments if c["id"] == int(path.rsplit("/", 1)[1]))
            found["body"] = body["body"]
            return 200, found
        return 404, {"message": "Not Found"}


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, str]]:
    fake = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.auth.append(self.headers.get("Authorization"))
            status, payload = fake.handle(self.command, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:
            pass

    with serve_http(Handler) as url:
        yield fake, url


def artifact(tmp_path: Path, number: bytes = b"7\n", body: bytes = f"{MARKER}\n| a | b |\n".encode()) -> Path:
    (tmp_path / "pr-number").write_bytes(number)
    (tmp_path / "comment.md").write_bytes(body)
    return tmp_path


def test_first_run_creates_the_comment(github: tuple[FakeGitHub, str]) -> None:
    fake, url = github
    fake.comment("Looks good to me", login="reviewer")
    assert upsert(GitHub(url, REPO, TOKEN), 7, f"{MARKER}\nbody", SHA) == ("created", 1002)
    assert fake.requests == [
        ("GET", f"/repos/{REPO}/pulls/7", None),
        ("GET", f"/repos/{REPO}/issues/7/comments?per_page=100&page=1", None),
        ("POST", f"/repos/{REPO}/issues/7/comments", {"body": f"{MARKER}\nbody"}),
    ]
    assert set(fake.auth) == {f"Bearer {TOKEN}"}


def test_a_later_run_edits_the_bots_marked_comment_on_any_page(github: tuple[FakeGitHub, str]) -> None:
    fake, url = github
    for n in range(100):
        fake.comment(f"comment {n}", login="reviewer")
    fake.comment(f"quoting {MARKER}", login="github-actions[bot]")  # the bot's, but not the marked one
    fake.comment(f"{MARKER}\nby hand", login="mallory")  # marked, but not the bot's: never edited
    ours = fake.comment(f"{MARKER}\nold")
    assert upsert(GitHub(url, REPO, TOKEN), 7, f"{MARKER}\nnew", SHA) == ("updated", ours["id"])
    assert fake.requests[1:] == [
        ("GET", f"/repos/{REPO}/issues/7/comments?per_page=100&page=1", None),
        ("GET", f"/repos/{REPO}/issues/7/comments?per_page=100&page=2", None),
        ("PATCH", f"/repos/{REPO}/issues/comments/{ours['id']}", {"body": f"{MARKER}\nnew"}),
    ]
    assert [c["body"] for c in fake.comments[-2:]] == [f"{MARKER}\nby hand", f"{MARKER}\nnew"]
    assert len(fake.comments) == 103  # nothing added


def test_a_pull_request_at_another_commit_gets_nothing(github: tuple[FakeGitHub, str]) -> None:
    fake, url = github
    with pytest.raises(NotThisHead, match=f"pull request #7 is at {SHA}, not {OTHER_SHA}"):
        upsert(GitHub(url, REPO, TOKEN), 7, f"{MARKER}\nbody", OTHER_SHA)
    assert [r[0] for r in fake.requests] == ["GET"]  # no comment read, none written


def test_an_api_error_names_the_call_and_githubs_message(github: tuple[FakeGitHub, str]) -> None:
    fake, url = github
    fake.fail_with = 403
    with pytest.raises(CommentError, match=r"GET /pulls/7: HTTP 403 .*Resource not accessible by integration"):
        upsert(GitHub(url, REPO, TOKEN), 7, "body", SHA)


@pytest.mark.parametrize(("number", "error"), [
    (b"7; rm -rf /", "'7; rm -rf /' is not a pull request number"),
    (b"0", "'0' is not a pull request number"),
    (b"-3", "'-3' is not a pull request number"),
    (b"12345678901", "'12345678901' is not a pull request number"),
    (b"\xff7", "needs pr-number"),
])
def test_the_artifacts_number_must_be_a_plain_integer(tmp_path: Path, number: bytes, error: str) -> None:
    with pytest.raises(CommentError, match=error):
        read_artifact(artifact(tmp_path, number=number))


def test_the_artifacts_body_is_bounded_utf8_text_that_carries_the_marker(tmp_path: Path) -> None:
    assert read_artifact(artifact(tmp_path, body=b"no marker")) == (7, f"{MARKER}\nno marker")
    assert read_artifact(artifact(tmp_path, number=b"42")) == (42, f"{MARKER}\n| a | b |\n")
    with pytest.raises(CommentError, match=r"comment.md: not UTF-8 text"):
        read_artifact(artifact(tmp_path, body=b"\xff\xfe"))
    with pytest.raises(CommentError, match=r"comment.md: 65,537 characters, more than GitHub's 65,536"):
        read_artifact(artifact(tmp_path, body=(MARKER + "x" * (MAX_BODY + 1 - len(MARKER))).encode()))
    (tmp_path / "comment.md").unlink()
    with pytest.raises(CommentError, match=r"needs pr-number \(digits\) and comment.md"):
        read_artifact(tmp_path)


def test_the_command_posts_then_updates_one_comment(github: tuple[FakeGitHub, str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = github
    for name, value in (("GITHUB_API_URL", url), ("GITHUB_REPOSITORY", REPO), ("GITHUB_TOKEN", TOKEN)):
        monkeypatch.setenv(name, value)
    directory = artifact(tmp_path)
    assert main(["--dir", str(directory), "--head-sha", SHA]) == 0
    assert main(["--dir", str(directory), "--head-sha", SHA]) == 0
    assert capsys.readouterr().out == ("created comment 1001 on pull request #7\n"
                                       "updated comment 1001 on pull request #7\n")
    assert len(fake.comments) == 1
    assert main(["--dir", str(directory), "--head-sha", OTHER_SHA]) == 0  # superseded: nothing posted
    assert capsys.readouterr().out.startswith("nothing posted: pull request #7 is at")
    assert main(["--dir", str(directory), "--head-sha", "HEAD"]) == 1
    assert "--head-sha: 'HEAD' is not a 40-hex-digit commit" in capsys.readouterr().err
    monkeypatch.delenv("GITHUB_TOKEN")
    assert main(["--dir", str(directory), "--head-sha", SHA]) == 1
    assert "GITHUB_REPOSITORY (owner/name) and GITHUB_TOKEN must be set" in capsys.readouterr().err
