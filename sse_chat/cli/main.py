"""The ``sse-chat`` command line. Commands stay thin: they turn options into values
and hand them to :mod:`sse_chat.cli.ask` and :mod:`sse_chat.cli.serve`."""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass

import click

from sse_chat.client import ChatClient, check_api_key, check_base_url, check_event_id
from sse_chat.protocol import EventId

from . import history
from .ask import AskRequest, ExitCode, StreamFollower, retry_reporter
from .completion import completion_script
from .fake_options import fake_options
from .output import JsonOutput, MarkdownOutput, RawOutput, TextOutput, usage_line
from .prompt import EmptyPrompt, build_prompt, readable_text
from .server_extra import server_missing_message
from .status import Status
from .tools_file import ToolsFileError, read_tools

DEFAULT_URL = "http://127.0.0.1:8000"


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  sse-chat ask --fake "Why is the sky blue?"
  sse-chat serve --port 8000
  sse-chat ask -u http://127.0.0.1:8000 --usage "Hello"
  sse-chat logs -n 5
  eval "$(sse-chat completion bash)"
""")
@click.version_option(package_name="sse-chat")
def cli() -> None:
    """Stream chat answers over Server-Sent Events."""


_ASK_EXAMPLES = """\b
Examples:
  sse-chat ask --fake "Why is the sky blue?"
  git diff | sse-chat ask "Review this"
  sse-chat ask -c "And in winter?"       # continue the last conversation
  sse-chat ask --resume last             # finish an interrupted answer
  sse-chat ask --json --max-tokens 5 --usage hi
"""

_LOGS_EXAMPLES = """\b
Examples:
  sse-chat logs
  sse-chat logs -n 10 --cid 3f2a9c0d1e4b
  sse-chat logs --json | jq -r .answer
"""

_SERVE_EXAMPLES = """\b
Examples:
  sse-chat serve
  sse-chat serve --host 0.0.0.0 --port 8080
  SSE_CHAT_FAKE_DELAY_MS=50 sse-chat serve
"""

_COMPLETION_EXAMPLES = """\b
Examples:
  sse-chat completion bash > ~/.local/share/bash-completion/completions/sse-chat
  sse-chat completion zsh > "${fpath[1]}/_sse-chat"
  sse-chat completion fish > ~/.config/fish/completions/sse-chat.fish
"""


@cli.command(epilog=_ASK_EXAMPLES)
@click.argument("prompt", nargs=-1)
@click.option("-u", "--url", envvar="SSE_CHAT_URL", help=f"Service URL [env SSE_CHAT_URL; default {DEFAULT_URL}].")
@click.option("-m", "--model", help="Model name (the server's SSE_CHAT_MODEL when not given).")
@click.option("-s", "--system", help="System prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Most tokens to generate.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature, 0 to 2.")
@click.option("--fake", is_flag=True, help="Use the fake model; with no --url, serve it in this process.")
@click.option("--raw", "mode", flag_value="raw", help="Write the event stream's bytes as received.")
@click.option("--json", "mode", flag_value="json", help="Write each event as one JSON line.")
@click.option("--resume", "resume_from", metavar="EVENT_ID|last",
              help="Attach to a stream and print what follows EVENT_ID; 'last': the log's last unfinished answer.")
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Reconnection attempts after a dropped connection.")
@click.option("--show-reasoning", is_flag=True, help="Write reasoning text to stderr, dimmed.")
@click.option("--markdown/--plain", default=False, envvar="SSE_CHAT_MARKDOWN",
              help="Render Markdown while it streams when stdout is a terminal [env SSE_CHAT_MARKDOWN].")
@click.option("--api-key", envvar="SSE_CHAT_API_KEY", metavar="KEY",
              help="Bearer key for a service with SSE_CHAT_API_KEYS [env SSE_CHAT_API_KEY].")
@click.option("--fake-option", "fake_pairs", multiple=True, metavar="NAME=VALUE",
              help="Ask the fake model for a fault, e.g. drop_every=5 or error_after=3 (repeatable; "
                   "docs/testing-clients.md).")
@click.option("--usage", "show_usage", is_flag=True,
              help="After the answer, write its token usage to stderr (-u is --url).")
@click.option("-c", "--continue", "continue_last", is_flag=True,
              help="Continue the most recent conversation of the log: its turns go as messages.")
@click.option("--cid", metavar="ID", help="Continue conversation ID of the log (see sse-chat logs).")
@click.option("--no-log", is_flag=True, help="Keep no record of this exchange in the local log [env SSE_CHAT_LOG=0].")
@click.option("--tools", "tools_file", metavar="FILE",
              help="A JSON file of OpenAI tools; each tool call is written to stderr: tool call NAME ARGUMENTS.")
def ask(prompt: tuple[str, ...], url: str | None, model: str | None, system: str | None,
        max_tokens: int | None, temperature: float | None, fake: bool, mode: str | None,
        resume_from: str | None, retries: int, show_reasoning: bool, markdown: bool, api_key: str | None,
        fake_pairs: tuple[str, ...], show_usage: bool, continue_last: bool, cid: str | None,
        no_log: bool, tools_file: str | None) -> None:
    """Ask PROMPT and write the answer to stdout as it streams.

    Words are joined; piped stdin comes first; a lone - reads stdin only.
    Every exchange is kept in a local log (sse-chat logs) unless --no-log.
    """
    if url:
        try:
            check_base_url(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from None
    if resume_from and resume_from != "last":
        try:
            check_event_id(resume_from)
        except ValueError as exc:
            raise click.BadParameter(f"{exc}, or 'last'", param_hint="--resume") from None
    if api_key:
        try:
            check_api_key(api_key)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--api-key or SSE_CHAT_API_KEY") from None
    if (continue_last or cid) and resume_from:
        raise click.UsageError("--continue and --cid ask a new question; --resume reads an existing answer")
    if tools_file and resume_from:
        raise click.UsageError("--tools goes with a new question; --resume reads an existing answer")
    tools = _tools(tools_file)
    log = history.History(history.log_path()) if history.enabled(no_log) else None
    if log is None and (continue_last or cid or resume_from == "last"):
        raise click.UsageError("--continue, --cid and --resume last read the local log, "
                               "which --no-log or SSE_CHAT_LOG=0 turn off")
    in_process = fake and not url
    recorder: history.Recorder | None = None
    try:
        if resume_from:
            url, resume_from, recorder = _resume_plan(log, url, resume_from)
            request = AskRequest(None, resume_from)
        else:
            try:
                text = build_prompt(prompt, sys.stdin)
            except EmptyPrompt as exc:
                raise click.UsageError(str(exc)) from None
            system = readable_text(system) if system is not None else None
            body = _chat_body(text, "fake" if fake else model, system, max_tokens, temperature, _faults(fake_pairs))
            if tools is not None:
                body["tools"] = tools
            conversation_id = None
            if log is not None and (continue_last or cid):
                conversation_id, body["messages"] = log.conversation(cid)
            if log is not None:
                recorder = history.Recorder(log, log.start(
                    conversation_id=conversation_id, base_url=None if in_process else (url or DEFAULT_URL),
                    model=body.get("model"), system=system, prompt=text))
            request = AskRequest(body, None)
    except history.HistoryError as exc:
        raise click.UsageError(str(exc)) from None
    output = _output(sys.stdout.buffer, mode, markdown)
    try:
        status = _run(output, url, fake, request, _ClientOptions(api_key, retries, show_reasoning, show_usage),
                      recorder)
    finally:
        _finish(output)
    sys.exit(status)


@cli.command(epilog=_LOGS_EXAMPLES)
@click.option("-n", "count", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many of the last exchanges to show.")
@click.option("--cid", metavar="ID", help="Only conversation ID.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs(count: int, cid: str | None, as_json: bool) -> None:
    """Show the last exchanges of the local log, oldest first (the log is
    SSE_CHAT_HOME/log.sqlite3, by default in the user data folder)."""
    exchanges = history.History(history.log_path()).last(count, cid)
    for exchange in exchanges:
        if as_json:
            click.echo(json.dumps(exchange.as_json(), ensure_ascii=False))
        else:
            click.echo(history.format_exchange(exchange))


@cli.command(epilog=_SERVE_EXAMPLES)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run the service under gunicorn with gevent workers (settings from the environment)."""
    from .serve import exec_gunicorn

    missing = server_missing_message("sse-chat serve")
    if missing:
        raise click.UsageError(missing)
    exec_gunicorn(f"{host}:{port}")


@cli.command(epilog=_COMPLETION_EXAMPLES)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script of sse-chat for SHELL (Click's)."""
    click.echo(completion_script(cli, shell))


def _output(stdout, mode: str | None, markdown: bool):
    if mode == "raw":
        return RawOutput(stdout)
    if mode == "json":
        return JsonOutput(stdout)
    if markdown and stdout.isatty():
        return MarkdownOutput(stdout)
    return TextOutput(stdout, is_terminal=stdout.isatty())


def _finish(output) -> None:
    try:
        output.finish()
    except BrokenPipeError:
        _silence_stdout()


@dataclass(frozen=True)
class _ClientOptions:
    api_key: str | None
    retries: int
    show_reasoning: bool
    show_usage: bool


def _resume_plan(log: history.History | None, url: str | None,
                 resume_from: str) -> tuple[str | None, str, history.Recorder | None]:
    """The URL, event id and log record of ``--resume EVENT_ID`` or ``--resume last``.

    Raises:
        history.HistoryError: ``last`` and the log has no unfinished answer.
    """
    if resume_from == "last":
        assert log is not None
        exchange: history.Exchange | None = log.unfinished()
        assert exchange is not None
        resume_from = exchange.last_event_id
        url = url or exchange.base_url
    else:
        event_id = EventId.parse(resume_from)
        exchange = log.by_stream(event_id.stream_id) if log is not None and event_id else None
    if log is None or exchange is None or exchange.last_event_id != resume_from:
        return url, resume_from, None
    return url, resume_from, history.Recorder(log, exchange.id, exchange.answer)


def _run(output, url: str | None, fake: bool, request: AskRequest, options: _ClientOptions,
         recorder: history.Recorder | None = None) -> int:
    in_process = fake and not url
    with ExitStack() as stack:
        base_url = _in_process(stack) if in_process else url or DEFAULT_URL
        stderr = Status(sys.stderr, output)
        client = ChatClient(base_url, options.api_key, options.retries, on_chunk=output.raw,
                            on_retry=retry_reporter(stderr))
        follower = StreamFollower(client, output, stderr, show_reasoning=options.show_reasoning)
        try:
            status = follower.run(request)
        except KeyboardInterrupt:
            _record(recorder, follower, resumable=not in_process)
            return _interrupted(follower, stderr, resumable=not in_process)
        except BrokenPipeError:
            _record(recorder, follower, resumable=not in_process)
            _silence_stdout()
            return ExitCode.BROKEN_PIPE
        _record(recorder, follower, resumable=not in_process and status == ExitCode.UNREACHABLE)
        if options.show_usage:
            _finish(output)
            stderr.line(usage_line(follower.done))
        return status


def _record(recorder: history.Recorder | None, follower: StreamFollower, *, resumable: bool) -> None:
    if recorder is None:
        return
    error = follower.error
    resumable = resumable and bool(follower.last_event_id)
    recorder.finish(text=follower.text, stream_id=follower.stream_id, last_event_id=follower.last_event_id,
                    done=follower.done, error_type=error.type if error else None,
                    error_message=error.message if error else None, resumable=resumable)


def _interrupted(follower: StreamFollower, stderr: Status, *, resumable: bool) -> int:
    """Ctrl-C: ask the server to stop the stream and say how to read the rest
    (not for the in-process server, which ends with this process)."""
    stderr.line("")  # the answer's display stops; past the terminal's ^C
    cancelled = follower.cancel()
    stderr.line("sse-chat: interrupted" + ("; the server stopped the stream" if cancelled else ""))
    if resumable and follower.stream_id and follower.last_event_id:
        stderr.line(f"sse-chat: to read the rest, run: {follower.resume_hint()}")
    return ExitCode.INTERRUPTED


def _in_process(stack: ExitStack) -> str:
    from sse_chat.config import ConfigError, Settings

    missing = server_missing_message("--fake without --url")
    if missing:
        raise click.UsageError(missing)
    from .inprocess import serve_fake_model

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return stack.enter_context(serve_fake_model(settings))


def _chat_body(prompt: str, model: str | None, system: str | None, max_tokens: int | None,
               temperature: float | None, fake: dict | None = None) -> dict:
    body: dict = {"prompt": prompt}
    for key, value in (("model", model), ("system", system), ("max_tokens", max_tokens),
                       ("temperature", temperature), ("fake", fake or None)):
        if value is not None:
            body[key] = value
    return body


def _faults(pairs: tuple[str, ...]) -> dict:
    try:
        return fake_options(pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fake-option") from None


def _tools(path: str | None) -> list | None:
    if path is None:
        return None
    try:
        return read_tools(path)
    except ToolsFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--tools") from None


def _silence_stdout() -> None:
    """After the reader of stdout went away, point stdout at /dev/null so that the
    interpreter's final flush does not print a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sse-chat")
