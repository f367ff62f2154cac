"""The local log of ``sse-chat ask``: every exchange (prompt, answer, model,
conversation id, stream id, last event id, usage, finish reason, time) in one
SQLite file, ``log.sqlite3`` under ``SSE_CHAT_HOME`` (default: the platform's user
data folder for ``sse-chat``). ``SSE_CHAT_LOG=0`` (or ``ask --no-log``) keeps none.
docs/cli.md, "The local log"."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

#: ``status`` of an exchange: the stream ended with ``done``; with ``error`` (or an
#: HTTP error); or it did not end here (interrupted, connection lost): resumable
#: with ``ask --resume last`` when ``last_event_id`` is set.
COMPLETE, FAILED, UNFINISHED = "complete", "failed", "unfinished"

#: The most characters of a prompt (and of a system prompt) the log keeps; the rest
#: is replaced by a note saying how much was left out (:func:`bounded`). A prompt of
#: a few megabytes (a whole file piped in) is sent whole but not stored whole.
MAX_LOGGED_CHARS = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    conversation_id TEXT NOT NULL,
    base_url TEXT,
    model TEXT,
    system TEXT,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '',
    stream_id TEXT,
    last_event_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    finish_reason TEXT,
    usage TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_conversation ON exchanges (conversation_id, id);
"""


class HistoryError(ValueError):
    """A conversation or an answer to resume that the log does not hold."""


@dataclass
class Exchange:
    """One question and its answer. ``created`` is Unix time in seconds; ``usage``
    is the ``done`` event's ``{"prompt_tokens", "completion_tokens", "total_tokens"}``
    (``None`` when not reported or not finished); ``status`` one of
    :data:`COMPLETE`, :data:`FAILED`, :data:`UNFINISHED`."""

    id: int
    created: float
    conversation_id: str
    base_url: str | None
    model: str | None
    system: str | None
    prompt: str
    answer: str
    stream_id: str | None
    last_event_id: str
    status: str
    finish_reason: str | None
    usage: dict | None
    error: str | None

    def as_json(self) -> dict:
        """The exchange as a JSON object (``created`` also as ISO 8601 UTC in ``time``)."""
        return {**asdict(self), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))}


def new_conversation_id() -> str:
    """A new conversation id: 12 hexadecimal digits."""
    return uuid.uuid4().hex[:12]


def enabled(no_log: bool) -> bool:
    """False with ``--no-log`` or when ``SSE_CHAT_LOG`` is ``0``/``false``/``no``/``off``."""
    return not no_log and os.environ.get("SSE_CHAT_LOG", "1").strip().lower() not in ("0", "false", "no", "off")


def log_path() -> Path:
    """``$SSE_CHAT_HOME/log.sqlite3``, else under ``platformdirs.user_data_dir("sse-chat")``."""
    home = os.environ.get("SSE_CHAT_HOME")
    if not home:
        import platformdirs

        home = platformdirs.user_data_dir("sse-chat", appauthor=False)
    return Path(home) / "log.sqlite3"


class History:
    """The log at ``path`` (created with its folder on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            db.executescript(_SCHEMA)
            with db:
                yield db

    def start(self, *, conversation_id: str | None, base_url: str | None, model: str | None,
              system: str | None, prompt: str) -> int:
        """Record a new question as :data:`UNFINISHED`; returns its row id. The
        prompt and system prompt are kept up to :data:`MAX_LOGGED_CHARS` characters."""
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO exchanges (created, conversation_id, base_url, model, system, prompt, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), conversation_id or new_conversation_id(), base_url, model,
                 bounded(system) if system is not None else None, bounded(prompt), UNFINISHED))
            return int(cursor.lastrowid or 0)

    def update(self, row_id: int, *, answer: str, stream_id: str | None, last_event_id: str, status: str,
               done: dict | None = None, error: str | None = None) -> None:
        """Record how far the answer got (the whole ``answer`` text so far)."""
        done = done or {}
        usage = done.get("usage")
        with self._db() as db:
            db.execute("UPDATE exchanges SET answer = ?, stream_id = ?, last_event_id = ?, status = ?, "
                       "finish_reason = ?, usage = ?, error = ? WHERE id = ?",
                       (answer, stream_id, last_event_id, status, done.get("finish_reason"),
                        json.dumps(usage) if usage is not None else None, error, row_id))

    def last(self, n: int = 3, conversation_id: str | None = None) -> list[Exchange]:
        """The last ``n`` exchanges (all when ``n`` is 0; of one conversation when
        given), oldest first."""
        where, args = ("WHERE conversation_id = ?", [conversation_id]) if conversation_id else ("", [])
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM exchanges {where} ORDER BY id DESC LIMIT ?",
                              [*args, n if n > 0 else -1]).fetchall()
        return [_exchange(row) for row in reversed(rows)]

    def conversation(self, conversation_id: str | None) -> tuple[str, list[dict]]:
        """The id of conversation ``conversation_id`` (the most recent one when
        ``None``) and its turns as chat ``messages``: ``[{"role": "user" |
        "assistant", "content": str}, …]``, oldest first, skipping empty answers.

        Raises:
            HistoryError: no such conversation (or no conversation at all).
        """
        with self._db() as db:
            if conversation_id is None:
                row = db.execute("SELECT conversation_id FROM exchanges ORDER BY id DESC LIMIT 1").fetchone()
                if row is None:
                    raise HistoryError("there is no conversation to continue in the log yet")
                conversation_id = str(row["conversation_id"])
            rows = db.execute("SELECT prompt, answer FROM exchanges WHERE conversation_id = ? ORDER BY id",
                              (conversation_id,)).fetchall()
        if not rows:
            raise HistoryError(f"no conversation {conversation_id!r} in the log (see `sse-chat logs`)")
        messages: list[dict] = []
        for row in rows:
            messages.append({"role": "user", "content": row["prompt"]})
            if row["answer"]:
                messages.append({"role": "assistant", "content": row["answer"]})
        return conversation_id, messages

    def unfinished(self) -> Exchange:
        """The most recent exchange whose answer did not end and can be resumed.

        Raises:
            HistoryError: there is none.
        """
        with self._db() as db:
            row = db.execute("SELECT * FROM exchanges WHERE status = ? AND last_event_id != '' "
                             "AND base_url IS NOT NULL ORDER BY id DESC LIMIT 1", (UNFINISHED,)).fetchone()
        if row is None:
            raise HistoryError("no unfinished answer in the log to resume")
        return _exchange(row)

    def by_stream(self, stream_id: str) -> Exchange | None:
        """The exchange of stream ``stream_id``, if the log has it."""
        with self._db() as db:
            row = db.execute("SELECT * FROM exchanges WHERE stream_id = ? ORDER BY id DESC LIMIT 1",
                             (stream_id,)).fetchone()
        return _exchange(row) if row is not None else None


def bounded(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` when it has at most ``limit`` characters; else its first ``limit``
    characters and a line ``[sse-chat: N more characters not kept in the log]``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[sse-chat: {len(text) - limit:,} more characters not kept in the log]"


def _exchange(row: sqlite3.Row) -> Exchange:
    values = dict(row)
    values["usage"] = json.loads(values["usage"]) if values["usage"] else None
    return Exchange(**values)


def format_exchange(exchange: Exchange) -> str:
    """An exchange for people: a header line, the prompt after ``> ``, the answer."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(exchange.created))
    usage = exchange.usage or {}
    tokens = f", {usage.get('total_tokens')} tokens" if usage else ""
    ending = exchange.finish_reason or exchange.status
    header = (f"── {when}  conversation {exchange.conversation_id}  model {exchange.model or 'default'}  "
              f"({ending}{tokens})")
    if exchange.status == UNFINISHED and exchange.last_event_id:
        header += f"  unfinished at {exchange.last_event_id}"
    prompt = "\n".join("> " + line for line in exchange.prompt.splitlines() or [""])
    answer = exchange.answer.rstrip("\n")
    if exchange.error:
        answer += f"\n[error: {exchange.error}]"
    return f"{header}\n{prompt}\n{answer}\n"


class Recorder:
    """Keeps one exchange of ``sse-chat ask`` in the log: ``row_id`` is its row, and
    ``answer_before`` the text an earlier run already received (when resuming)."""

    def __init__(self, history: History, row_id: int, answer_before: str = "") -> None:
        self._history = history
        self._row_id = row_id
        self._before = answer_before

    def finish(self, *, text: str, stream_id: str | None, last_event_id: str, done: dict | None,
               error_type: str | None, error_message: str | None, resumable: bool) -> None:
        """Record the outcome: :data:`COMPLETE` after ``done``; :data:`UNFINISHED`
        when the stream may go on (``resumable``: cut, given up, interrupted);
        :data:`FAILED` otherwise (an ``error`` event, an HTTP error)."""
        status = COMPLETE if done is not None else UNFINISHED if resumable else FAILED
        error = f"{error_type}: {error_message}" if error_type and status == FAILED else None
        self._history.update(self._row_id, answer=self._before + text, stream_id=stream_id,
                             last_event_id=last_event_id, status=status, done=done, error=error)
