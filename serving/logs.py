"""The server's log lines, on stdout: one JSON object per line (the default, what the clouds' log pipelines
parse into fields), or plain text for a terminal (SERVESTACK_LOG_FORMAT=text).

Every line carries `time` (UTC, ISO 8601), `level` (and `severity`, the same, for Cloud Logging), `logger`,
`message`, and the `model` and `revision` the server serves; a line logged with an exception adds its
traceback as `exception`. The app's edge logs one line per /v1 request when it is answered (serving.app),
with its fields passed as `extra={"fields": {...}}`:
request_id, client, route, method, status, latency_seconds, prompt_tokens, completion_tokens, ttft_seconds,
finish_reason (null where they do not apply: a request refused before generating has no tokens), and
`prompt` only with SERVESTACK_LOG_PROMPTS=true. In text form the fields follow the message as `key=value`.

`configure` is called once by `python -m serving` and again in the engine's own process, so that both write
the same lines; uvicorn's loggers propagate to the same handler (its access log is off: the edge's request
line replaces it).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]


class JsonFormatter(logging.Formatter):
    def __init__(self, model: str, revision: str) -> None:
        super().__init__()
        self.model = model
        self.revision = revision

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            # GKE's logging agent reads a line's severity from this field (and `time`, `message`): with `level`
            # alone every line would land as DEFAULT; the names are the same (DEBUG ... CRITICAL).
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "model": self.model,
            "revision": self.revision,
        }
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, model: str, revision: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s %(name)s [{model}@{revision}]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if not fields:
            return text
        head, newline, rest = text.partition("\n")  # the pairs go on the message's line, before a traceback
        pairs = " ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in fields.items())
        return f"{head} {pairs}{newline}{rest}"


def configure(log_format: LogFormat, level: str | int, model: str, revision: str) -> None:
    """One handler on the root logger, writing to stdout in `log_format`; replaces any handler set before."""
    handler = logging.StreamHandler(sys.stdout)
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(formatter(model, revision))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)  # Python's warnings as log lines too, not raw text on stderr
