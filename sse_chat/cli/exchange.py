"""One exchange of the command line, for ``ask`` and each turn of ``chat``: the
client (of a URL, or of the fake model served in this process), the output, the
stream followed to its end, Ctrl-C and a closed stdout handled, the outcome
recorded in the local log."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import click

from sse_chat.client import ChatClient, check_base_url

from . import history
from .ask import AskRequest, ExitCode, Output, StreamFollower, retry_reporter
from .output import BufferedOutput, JsonOutput, MarkdownOutput, RawOutput, TextOutput, usage_line
from .server_extra import server_missing_message
from .status import Status

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class ClientOptions:
    """How to reach the service and what to show besides the answer."""

    url: str | None = None  # None: SSE_CHAT_URL was not given either: DEFAULT_URL, or in-process with --fake
    fake: bool = False
    api_key: str | None = None
    retries: int = 5
    show_reasoning: bool = False
    show_usage: bool = False

    @property
    def in_process(self) -> bool:
        """True when the fake model is served in this process (``--fake``, no URL)."""
        return self.fake and not self.url

    @property
    def base_url_for_log(self) -> str | None:
        """The URL the log keeps for ``--resume last`` (none for the in-process server)."""
        return None if self.in_process else (self.url or DEFAULT_URL)


def check_url(url: str | None) -> None:
    """Raises :class:`click.BadParameter` for a malformed ``--url``."""
    if url:
        try:
            check_base_url(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from None


@contextmanager
def connected(options: ClientOptions, output: Output, status: Status) -> Iterator[ChatClient]:
    """A :class:`ChatClient` of the service (``options.url`` or :data:`DEFAULT_URL`)
    or of the fake model served in this process for as long as the ``with`` block
    lasts; its raw bytes go to ``output`` and its reconnections to ``status``.

    Raises:
        click.UsageError: the in-process server cannot start (the ``server`` extra
            is missing, or an ``SSE_CHAT_*`` setting is invalid).
    """
    with ExitStack() as stack:
        base_url = _serve_in_process(stack) if options.in_process else options.url or DEFAULT_URL
        client = stack.enter_context(ChatClient(base_url, options.api_key, options.retries, on_chunk=output.raw,
                                                on_retry=retry_reporter(status)))
        yield client


def make_output(stdout: BinaryIO, mode: str | None, markdown: bool, *, whole: bool = False,
                whole_lines: bool = False) -> Any:
    """The output for ``--raw``, ``--json``, ``--markdown`` (on a terminal only) or
    plain text; ``whole`` (``--no-stream``) holds everything back until the end;
    ``whole_lines`` ends every answer with a newline, terminal or not (``chat``)."""
    output: Any
    if mode == "raw":
        output = RawOutput(stdout)
    elif mode == "json":
        output = JsonOutput(stdout)
    elif markdown and stdout.isatty():
        output = MarkdownOutput(stdout)
    else:
        output = TextOutput(stdout, is_terminal=whole_lines or stdout.isatty())
    return BufferedOutput(output) if whole else output


def finish(output: Output) -> None:
    """End the output (a final newline on a terminal, the last Markdown drawing);
    quietly when stdout's reader went away."""
    try:
        output.finish()
    except BrokenPipeError:
        silence_stdout()


def run_exchange(client: ChatClient, output: Output, status: Status, request: AskRequest, options: ClientOptions,
                 recorder: history.Recorder | None = None) -> tuple[ExitCode, StreamFollower]:
    """Ask (or resume) and follow the stream to its end; record it. On Ctrl-C the
    server is told to stop the stream and stderr says how to read the rest (not
    for the in-process server, which ends with this process).

    Returns the exit status (:class:`ExitCode`; ``INTERRUPTED`` after Ctrl-C,
    ``BROKEN_PIPE`` when stdout was closed) and the follower (its ``text``, ``done``).
    """
    resumable = not options.in_process
    follower = StreamFollower(client, output, status, show_reasoning=options.show_reasoning)
    try:
        code = follower.run(request)
    except KeyboardInterrupt:
        _record(recorder, follower, resumable=resumable)
        return _interrupted(follower, status, resumable=resumable), follower
    except BrokenPipeError:
        _record(recorder, follower, resumable=resumable)
        silence_stdout()
        return ExitCode.BROKEN_PIPE, follower
    _record(recorder, follower, resumable=resumable and code == ExitCode.UNREACHABLE)
    finish(output)
    if options.show_usage:
        status.line(usage_line(follower.done))
    return code, follower


def silence_stdout() -> None:
    """After the reader of stdout went away, point stdout at /dev/null so that the
    interpreter's final flush does not print a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _record(recorder: history.Recorder | None, follower: StreamFollower, *, resumable: bool) -> None:
    if recorder is None:
        return
    error = follower.error
    recorder.finish(text=follower.text, stream_id=follower.stream_id, last_event_id=follower.last_event_id,
                    done=follower.done, error_type=error.type if error else None,
                    error_message=error.message if error else None,
                    resumable=resumable and bool(follower.last_event_id))


def _interrupted(follower: StreamFollower, status: Status, *, resumable: bool) -> ExitCode:
    status.line("")  # the answer's display stops; past the terminal's ^C
    cancelled = follower.cancel()
    status.line("sse-chat: interrupted" + ("; the server stopped the stream" if cancelled else ""))
    if resumable and follower.stream_id and follower.last_event_id:
        status.line(f"sse-chat: to read the rest, run: {follower.resume_hint()}")
    return ExitCode.INTERRUPTED


def _serve_in_process(stack: ExitStack) -> str:
    from sse_chat.config import ConfigError, Settings

    missing = server_missing_message("--fake without --url")
    if missing:
        raise click.UsageError(missing)
    from .inprocess import serve_fake_model

    try:
        settings = Settings.from_env()
        return stack.enter_context(serve_fake_model(settings))
    except ConfigError as exc:  # a setting, or a server tool that does not import
        raise click.UsageError(str(exc)) from None
