"""API keys: many clients, hashes only, reread when the kubelet swaps the mounted Secret."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from serving.keys import ApiKeys, Client, KeysFileError, digest, parse_keys


def _document(*clients: tuple[str, str, int, int]) -> str:
    return json.dumps({"clients": [{"client": c, "sha256": digest(k), "requestsPerMinute": rpm,
                                    "tokensPerMinute": tpm} for c, k, rpm, tpm in clients]})


class MountedSecret:
    """A Secret volume as the kubelet writes it: files are symlinks through `..data` to a timestamped
    directory, and an update writes a new directory and swaps the `..data` symlink atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0

    def write(self, text: str) -> Path:
        self.generation += 1
        version = self.root / f"..2026_11_29_{self.generation:04d}"
        version.mkdir()
        (version / "api-keys.json").write_text(text)
        link = self.root / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.root / "..data")
        target = self.root / "api-keys.json"
        if not target.is_symlink():
            target.symlink_to("..data/api-keys.json")
        return target


def test_each_key_identifies_its_client_with_its_limits(tmp_path: Path) -> None:
    path = MountedSecret(tmp_path).write(_document(("web", "key-web", 600, 2_000_000), ("batch", "key-batch", 60, 0)))
    keys = ApiKeys(path)
    assert keys.required and keys.clients == ["batch", "web"]
    assert keys.identify("key-web") == Client("web", 600, 2_000_000)
    assert keys.identify("key-batch") == Client("batch", 60, 0)
    assert keys.identify("key-nobody") is None
    assert keys.identify("") is None


def test_a_rotation_reaches_the_running_server_without_a_restart(tmp_path: Path) -> None:
    secret = MountedSecret(tmp_path)
    path = secret.write(_document(("web", "old-key", 600, 0)))
    keys = ApiKeys(path, check_every=0)
    assert keys.identify("old-key") == Client("web", 600)
    secret.write(_document(("web", "new-key", 600, 0)))
    assert keys.identify("new-key") == Client("web", 600)
    assert keys.identify("old-key") is None


def test_a_broken_update_keeps_the_keys_already_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = MountedSecret(tmp_path)
    path = secret.write(_document(("web", "key-web", 600, 0)))
    keys = ApiKeys(path, check_every=0)
    secret.write("{not json")
    with caplog.at_level(logging.ERROR, "servestack.keys"):
        assert keys.identify("key-web") == Client("web", 600)
    assert "not valid JSON" in caplog.text and "keeping the 1 key(s) already read" in caplog.text


def test_the_file_is_looked_at_only_now_and_then(tmp_path: Path) -> None:
    secret = MountedSecret(tmp_path)
    path = secret.write(_document(("web", "old-key", 0, 0)))
    keys = ApiKeys(path, check_every=3600)
    secret.write(_document(("web", "new-key", 0, 0)))
    assert keys.identify("old-key") == Client("web")  # not yet looked at again


def test_a_bad_file_at_start_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"clients": [{"client": "web", "sha256": "abc"}]}))
    with pytest.raises(KeysFileError, match=r"keys.json: clients\[0\].sha256 must be 64 hex digits"):
        ApiKeys(path)


@pytest.mark.parametrize(("document", "message"), [
    ({"keys": []}, 'expected {"clients": [{"client": ID, "sha256": HEX, ...}]}'),
    ({"clients": ["web"]}, "clients[0] is not an object"),
    ({"clients": [{"sha256": "0" * 64}]}, "clients[0].client must be a non-empty string"),
    ({"clients": [{"client": "a", "sha256": "0" * 64}, {"client": "a", "sha256": "1" * 64}]},
     "clients[1].client 'a' is listed twice"),
    ({"clients": [{"client": "a", "sha256": "0" * 64, "tokensPerMinute": -5}]},
     "clients[0].tokensPerMinute must be a whole number >= 0 (0: no limit)"),
])
def test_each_bad_entry_is_named(document: object, message: str) -> None:
    with pytest.raises(KeysFileError) as raised:
        parse_keys(json.dumps(document), "keys.json")
    assert str(raised.value) == f"keys.json: {message}"


def test_the_file_holds_hashes_never_keys() -> None:
    clients = parse_keys(_document(("web", "sk-secret", 1, 1)), "keys.json")
    assert list(clients) == [digest("sk-secret")] and "sk-secret" not in _document(("web", "sk-secret", 1, 1))


def test_one_key_by_hand_is_a_default_client_without_limits() -> None:
    keys = ApiKeys(single_key="sk-dev")
    assert keys.required and keys.identify("sk-dev") == Client("default")
    assert not ApiKeys().required
