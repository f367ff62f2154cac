"""``sse-chat chat``: a conversation in the terminal, one turn per line. Each answer
streams like ``ask``'s; the earlier turns go with each question as ``messages``;
every turn is kept in the local log under one conversation id. Ctrl-C stops an
answer (the server is told to stop it) and the session goes on; ``exit``, ``quit``
or Ctrl-D end it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from sse_chat.client import ChatClient

from . import history
from .ask import AskRequest, ExitCode, Output
from .exchange import ClientOptions, finish, run_exchange
from .prompt import readable_text
from .status import Status

#: Lines that end the session (besides Ctrl-D, the end of input).
EXIT_WORDS = ("exit", "quit")
PROMPT = "> "


class ChatSession:
    """One conversation of ``sse-chat chat``.

    Args:
        client: the service's client.
        options: how it was reached (for the resume hint and the log's URL).
        fields: the request fields of every turn (``model``, ``system``,
            ``max_tokens``, ``temperature``, ``fake``, ``extra_body``: the keywords of
            :meth:`ChatClient.stream` other than ``prompt`` and ``messages``).
        output, status: where answers and status lines go (one for the session).
        log: the local log, or ``None`` (``--no-log``).
        conversation_id, messages: the conversation to continue (``-c``, ``--cid``)
            and its earlier turns; a new conversation when ``conversation_id`` is None.
        read_line: reads the next line after writing its prompt; raises
            ``EOFError`` at the end of input (:func:`input`).
    """

    def __init__(self, client: ChatClient, options: ClientOptions, fields: dict[str, Any], output: Output,
                 status: Status, log: history.History | None, conversation_id: str | None = None,
                 messages: list[dict] | None = None, read_line: Callable[[str], str] = input) -> None:
        self._client = client
        self._options = options
        self._fields = fields
        self._output = output
        self._status = status
        self._log = log
        self.conversation_id = conversation_id or history.new_conversation_id()
        self.messages: list[dict] = list(messages or [])
        self._read_line = read_line

    def run(self, stderr: TextIO) -> ExitCode:
        """Read lines and answer them until ``exit``, ``quit`` or the end of input;
        the exit status (``BROKEN_PIPE`` when stdout was closed)."""
        model = self._fields.get("model") or "the service's default model"
        where = "in this process" if self._options.in_process else f"at {self._client.base_url}"
        self._status.line(f"sse-chat: chatting with {model} {where} (conversation {self.conversation_id})")
        self._status.line("sse-chat: Ctrl-C stops an answer; exit or Ctrl-D ends the chat")
        while True:
            try:
                line = readable_text(self._read_line(PROMPT))
            except EOFError:
                stderr.write("\n")
                return ExitCode.OK
            except KeyboardInterrupt:
                stderr.write("\n")  # as shells do: a new prompt
                continue
            text = line.strip()
            if text in EXIT_WORDS:
                return ExitCode.OK
            if text and self.turn(line) == ExitCode.BROKEN_PIPE:
                return ExitCode.BROKEN_PIPE

    def turn(self, prompt: str) -> ExitCode:
        """Ask ``prompt`` after the earlier turns and stream the answer; the turn and
        its answer (as far as it got) join the conversation."""
        body = {**self._fields, "prompt": prompt, "messages": list(self.messages) or None}
        recorder = None
        if self._log is not None:
            recorder = history.Recorder(self._log, self._log.start(
                conversation_id=self.conversation_id, base_url=self._options.base_url_for_log,
                model=self._fields.get("model"), system=self._fields.get("system"), prompt=prompt))
        try:
            code, follower = run_exchange(self._client, self._output, self._status, AskRequest(body, None),
                                          self._options, recorder)
        finally:
            finish(self._output)
        self.messages.append({"role": "user", "content": prompt})
        if follower.text:
            self.messages.append({"role": "assistant", "content": follower.text})
        return code
