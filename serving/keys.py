"""Who is calling: API keys, each belonging to a client with its own limits.

The keys come from a JSON file (SERVESTACK_API_KEYS_FILE), which in a cluster is a mounted Secret:

    {"clients": [{"client": "web", "sha256": "<hex of the key's SHA-256>",
                  "requestsPerMinute": 600, "tokensPerMinute": 2000000}, ...]}

The file holds hashes, never keys. It is reread when it changes (the kubelet swaps a mounted Secret's
files in place when the Secret changes, within a minute or two), so keys rotate without a restart; a
changed file that cannot be read leaves the keys as they were and says why in the log. A single key
(SERVESTACK_API_KEY) is a client named "default" with no limits, for a server run by hand.

The client id, never the key, is what metrics and logs name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("servestack.keys")

# How often a request may look at the file for a change: a stat, not a read.
CHECK_EVERY_SECONDS = 2.0


class KeysFileError(Exception):
    """The keys file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Client:
    id: str
    requests_per_minute: int = 0  # 0: no limit
    tokens_per_minute: int = 0


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(text: str, where: str) -> dict[str, Client]:
    """The clients by their key's SHA-256, or KeysFileError naming the entry and the field."""
    try:
        document = json.loads(text)
    except ValueError as e:
        raise KeysFileError(f"{where}: not valid JSON ({e})") from None
    entries = document.get("clients") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeysFileError(f'{where}: expected {{"clients": [{{"client": ID, "sha256": HEX, ...}}]}}')
    clients: dict[str, Client] = {}
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise KeysFileError(f"{where}: clients[{i}] is not an object")
        client, sha = entry.get("client"), entry.get("sha256")
        if not isinstance(client, str) or not client:
            raise KeysFileError(f"{where}: clients[{i}].client must be a non-empty string")
        if client in seen:
            raise KeysFileError(f"{where}: clients[{i}].client {client!r} is listed twice")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
            raise KeysFileError(f"{where}: clients[{i}].sha256 must be 64 hex digits")
        limits = [_limit(entry, name, where, i) for name in ("requestsPerMinute", "tokensPerMinute")]
        seen.add(client)
        clients[sha.lower()] = Client(client, *limits)
    return clients


def _limit(entry: dict[str, Any], name: str, where: str, i: int) -> int:
    value = entry.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeysFileError(f"{where}: clients[{i}].{name} must be a whole number >= 0 (0: no limit)")
    return value


class ApiKeys:
    """The keys the server accepts: from the keys file (kept current), or one key, or none (no auth)."""

    def __init__(self, path: Path | None = None, single_key: str | None = None,
                 check_every: float = CHECK_EVERY_SECONDS) -> None:
        self._path = path
        self._check_every = check_every
        self._clients: dict[str, Client] = {}
        self._seen: tuple[int, int, int] | None = None
        self._checked = 0.0
        if path is not None:
            self._clients = self._read(path)  # a bad file at start is fatal: raise
        elif single_key:
            self._clients = {digest(single_key): Client("default")}

    @property
    def required(self) -> bool:
        return self._path is not None or bool(self._clients)

    @property
    def clients(self) -> list[str]:
        return sorted(c.id for c in self._clients.values())

    def identify(self, key: str) -> Client | None:
        """The client a presented key belongs to, or None."""
        self._refresh()
        return self._clients.get(digest(key))

    def _refresh(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._checked < self._check_every:
            return
        self._checked = now
        try:
            stamp = self._stamp(self._path)
        except OSError as e:
            log.error("API keys: cannot stat %s (%s); keeping the %d key(s) already read", self._path, e,
                      len(self._clients))
            return
        if stamp == self._seen:
            return
        try:
            clients = self._read(self._path)
        except (OSError, KeysFileError) as e:
            log.error("API keys: %s; keeping the %d key(s) already read", e, len(self._clients))
            return
        added = sorted({c.id for c in clients.values()} - {c.id for c in self._clients.values()})
        log.info("API keys: reread %s, %d client(s)%s", self._path, len(clients),
                 f", new: {', '.join(added)}" if added else "")
        self._clients = clients

    def _read(self, path: Path) -> dict[str, Client]:
        stamp = self._stamp(path)
        clients = parse_keys(path.read_text(), str(path))
        self._seen, self._checked = stamp, time.monotonic()
        return clients

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int]:
        # stat follows the kubelet's symlinks: a swapped Secret is a new file.
        st = os.stat(path)
        return st.st_ino, st.st_mtime_ns, st.st_size
