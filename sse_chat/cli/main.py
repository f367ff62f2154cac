"""The ``sse-chat`` command line. Commands stay thin: they turn options into values
and hand them to :mod:`sse_chat.cli.exchange` (``ask``), :mod:`sse_chat.cli.chat`,
:mod:`sse_chat.cli.history` (``logs``) and :mod:`sse_chat.cli.serve`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from sse_chat.client import ChatError, check_api_key, check_event_id
from sse_chat.client_base import chat_body
from sse_chat.protocol import EventId

from . import history
from .ask import AskRequest, ExitCode
from .chat import ChatSession
from .completion import completion_script
from .exchange import DEFAULT_URL, ClientOptions, check_url, connected, finish, make_output, run_exchange
from .fake_options import fake_options
from .model_options import NAMED_FIELDS, model_options
from .prompt import EmptyPrompt, build_prompt, readable_text
from .server_extra import server_missing_message
from .status import Status
from .tools_file import ToolsFileError, read_tools


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  sse-chat ask --fake "Why is the sky blue?"
  sse-chat chat --fake
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
  sse-chat ask -o temperature 0.2 -o seed 7 "Name a colour"
"""

_CHAT_EXAMPLES = """\b
Examples:
  sse-chat chat --fake
  sse-chat chat -m gemma-3-270m -s "Answer briefly"
  sse-chat chat -c                      # go on with the last conversation
"""

_MODELS_EXAMPLES = """\b
Examples:
  sse-chat models
  sse-chat models --json | jq -r .id
"""

_LOGS_EXAMPLES = """\b
Examples:
  sse-chat logs
  sse-chat logs -n 0 --cid 3f2a9c0d1e4b   # a whole conversation
  sse-chat logs --json | jq -r .answer
  sse-chat logs path
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


def _options(*decorators: Callable) -> Callable:
    """Apply click option ``decorators`` in the order written."""
    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


_service_options = _options(
    click.option("-u", "--url", envvar="SSE_CHAT_URL", help=f"Service URL [env SSE_CHAT_URL; default {DEFAULT_URL}]."),
    click.option("--api-key", envvar="SSE_CHAT_API_KEY", metavar="KEY",
                 help="Bearer key for a service with SSE_CHAT_API_KEYS [env SSE_CHAT_API_KEY]."),
)

_question_options = _options(
    click.option("-m", "--model", help="Model name (the server's SSE_CHAT_MODEL when not given)."),
    click.option("-s", "--system", help="System prompt."),
    click.option("--max-tokens", type=click.IntRange(min=1), help="Most tokens to generate."),
    click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature, 0 to 2."),
    click.option("-o", "--option", "option_pairs", type=(str, str), multiple=True, metavar="KEY VALUE",
                 help="A model option for the request (temperature, top_p, seed, …; repeatable); VALUE is sent "
                      "as a number, true/false, a list or object when it reads as JSON."),
    click.option("--fake", is_flag=True, help="Use the fake model; with no --url, serve it in this process."),
    click.option("--fake-option", "fake_pairs", multiple=True, metavar="NAME=VALUE",
                 help="Ask the fake model for a fault, e.g. drop_every=5 or error_after=3 (repeatable; "
                      "docs/testing-clients.md)."),
    click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
                 help="Reconnection attempts after a dropped connection."),
    click.option("--show-reasoning", is_flag=True, help="Write reasoning text to stderr, dimmed."),
    click.option("--markdown/--plain", default=False, envvar="SSE_CHAT_MARKDOWN",
                 help="Render Markdown while it streams when stdout is a terminal [env SSE_CHAT_MARKDOWN]."),
    click.option("--no-stream", is_flag=True, help="Write the whole answer at once when it is complete."),
    click.option("--usage", "show_usage", is_flag=True,
                 help="After the answer, write its token usage to stderr (-u is --url)."),
    click.option("-c", "--continue", "continue_last", is_flag=True,
                 help="Continue the most recent conversation of the log: its turns go as messages."),
    click.option("--cid", metavar="ID", help="Continue conversation ID of the log (see sse-chat logs)."),
    click.option("--no-log", is_flag=True, help="Keep no record in the local log [env SSE_CHAT_LOG=0]."),
)


@cli.command(epilog=_ASK_EXAMPLES)
@click.argument("prompt", nargs=-1)
@_service_options
@_question_options
@click.option("--raw", "mode", flag_value="raw", help="Write the event stream's bytes as received.")
@click.option("--json", "mode", flag_value="json", help="Write each event as one JSON line.")
@click.option("--resume", "resume_from", metavar="EVENT_ID|last",
              help="Attach to a stream and print what follows EVENT_ID; 'last': the log's last unfinished answer.")
@click.option("--tools", "tools_file", metavar="FILE",
              help="A JSON file of OpenAI tools; each tool call is written to stderr: tool call NAME ARGUMENTS.")
def ask(prompt: tuple[str, ...], url: str | None, api_key: str | None, mode: str | None, resume_from: str | None,
        tools_file: str | None, continue_last: bool, cid: str | None, no_log: bool, markdown: bool, no_stream: bool,
        retries: int, show_reasoning: bool, show_usage: bool, **question: Any) -> None:
    """Ask PROMPT and write the answer to stdout as it streams.

    Words are joined; piped stdin comes first; a lone - reads stdin only.
    Every exchange is kept in a local log (sse-chat logs) unless --no-log.
    """
    options = _client_options(url, api_key, question["fake"], retries, show_reasoning, show_usage)
    if resume_from and resume_from != "last":
        try:
            check_event_id(resume_from)
        except ValueError as exc:
            raise click.BadParameter(f"{exc}, or 'last'", param_hint="--resume") from None
    if (continue_last or cid) and resume_from:
        raise click.UsageError("--continue and --cid ask a new question; --resume reads an existing answer")
    if tools_file and resume_from:
        raise click.UsageError("--tools goes with a new question; --resume reads an existing answer")
    tools = _tools(tools_file)
    log = _log(no_log, continue_last or bool(cid) or resume_from == "last")
    recorder: history.Recorder | None = None
    try:
        if resume_from:
            url, resume_from, recorder = _resume_plan(log, url, resume_from)
            options = _client_options(url, api_key, question["fake"], retries, show_reasoning, show_usage)
            request = AskRequest(None, resume_from)
        else:
            try:
                text = build_prompt(prompt, sys.stdin)
            except EmptyPrompt as exc:
                raise click.UsageError(str(exc)) from None
            body = {**_fields(**question), "prompt": text}
            if tools is not None:
                body["tools"] = tools
            conversation_id = None
            if log is not None and (continue_last or cid):
                conversation_id, body["messages"] = log.conversation(cid)
            if log is not None:
                recorder = history.Recorder(log, log.start(
                    conversation_id=conversation_id, base_url=options.base_url_for_log,
                    model=body.get("model"), system=body.get("system"), prompt=text))
            request = AskRequest(body, None)
    except history.HistoryError as exc:
        raise click.UsageError(str(exc)) from None
    output = make_output(sys.stdout.buffer, mode, markdown, whole=no_stream)
    status = Status(sys.stderr, output)
    try:
        with connected(options, output, status) as client:
            code, _ = run_exchange(client, output, status, request, options, recorder)
    finally:
        finish(output)
    sys.exit(code)


@cli.command(epilog=_CHAT_EXAMPLES)
@_service_options
@_question_options
def chat(url: str | None, api_key: str | None, continue_last: bool, cid: str | None, no_log: bool, markdown: bool,
         no_stream: bool, retries: int, show_reasoning: bool, show_usage: bool, **question: Any) -> None:
    """A conversation in the terminal: type a line, read the answer as it streams.

    Each turn sends the earlier ones as messages and is kept in the local log
    under one conversation id. Ctrl-C stops an answer; 'exit' or Ctrl-D ends.
    """
    options = _client_options(url, api_key, question["fake"], retries, show_reasoning, show_usage)
    log = _log(no_log, continue_last or bool(cid))
    conversation_id, messages = None, None
    if log is not None and (continue_last or cid):
        try:
            conversation_id, messages = log.conversation(cid)
        except history.HistoryError as exc:
            raise click.UsageError(str(exc)) from None
    if sys.stdin.isatty():
        import readline  # noqa: F401 - line editing and history for input()
    stdout = sys.stdout.buffer
    output = make_output(stdout, None, markdown, whole=no_stream, whole_lines=True)
    status = Status(sys.stderr, output)
    with connected(options, output, status) as client:
        session = ChatSession(client, options, _fields(**question), output, status, log, conversation_id, messages)
        code = session.run(sys.stderr)
    sys.exit(code)


@cli.command(epilog=_MODELS_EXAMPLES)
@_service_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model and line.")
def models(url: str | None, api_key: str | None, as_json: bool) -> None:
    """List the service's models (GET /v1/models), one per line."""
    options = _client_options(url, api_key, False, 0, False, False)
    output = make_output(sys.stdout.buffer, None, False)
    status = Status(sys.stderr, output)
    with connected(options, output, status) as client:
        try:
            listed = client.models()
        except ChatError as exc:
            status.line(f"sse-chat: {exc}")
            sys.exit(ExitCode.UNREACHABLE if exc.status is None else ExitCode.FAILED)
    for model in listed:
        click.echo(json.dumps(model, ensure_ascii=False) if as_json else model.get("id"))


@cli.group(epilog=_LOGS_EXAMPLES, invoke_without_command=True)
@click.option("-n", "count", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many of the last exchanges to show; 0 for all.")
@click.option("--cid", metavar="ID", help="Only conversation ID.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def logs(context: click.Context, count: int, cid: str | None, as_json: bool) -> None:
    """Show the last exchanges of the local log, oldest first (the log is
    SSE_CHAT_HOME/log.sqlite3, by default in the user data folder;
    `sse-chat logs path` prints its path)."""
    if context.invoked_subcommand is not None:
        return
    for exchange in history.History(history.log_path()).last(count, cid):
        if as_json:
            click.echo(json.dumps(exchange.as_json(), ensure_ascii=False))
        else:
            click.echo(history.format_exchange(exchange))


@logs.command("path")
def logs_path() -> None:
    """Print the path of the local log file (it may not exist yet)."""
    click.echo(str(history.log_path()))


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


def _client_options(url: str | None, api_key: str | None, fake: bool, retries: int, show_reasoning: bool,
                    show_usage: bool) -> ClientOptions:
    check_url(url)
    if api_key:
        try:
            check_api_key(api_key)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--api-key or SSE_CHAT_API_KEY") from None
    return ClientOptions(url, fake, api_key, retries, show_reasoning, show_usage)


def _log(no_log: bool, needed: bool) -> history.History | None:
    log = history.History(history.log_path()) if history.enabled(no_log) else None
    if log is None and needed:
        raise click.UsageError("--continue, --cid and --resume last read the local log, "
                               "which --no-log or SSE_CHAT_LOG=0 turn off")
    return log


def _fields(model: str | None, system: str | None, max_tokens: int | None, temperature: float | None,
            option_pairs: tuple[tuple[str, str], ...], fake: bool, fake_pairs: tuple[str, ...]) -> dict:
    """The request fields of ``ask``'s and ``chat``'s options: the keywords of
    :meth:`ChatClient.stream` but ``prompt`` and ``messages``."""
    try:
        extra = model_options(option_pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-o/--option") from None
    named: dict[str, Any] = {"model": "fake" if fake else model, "max_tokens": max_tokens, "temperature": temperature,
                             "system": readable_text(system) if system is not None else None}
    for key in NAMED_FIELDS:
        if key in extra and named[key] is None:
            named[key] = extra.pop(key)
        extra.pop(key, None)
    fields: dict[str, Any] = {key: value for key, value in named.items() if value is not None}
    faults = _faults(fake_pairs)
    if faults:
        fields["fake"] = faults
    if extra:
        fields["extra_body"] = extra
    keywords = dict.fromkeys(("messages", "model", "system", "max_tokens", "temperature", "tools", "tool_choice",
                              "fake", "extra_body"))
    try:
        chat_body("a question", **{**keywords, **fields})  # what the client would refuse, refused now
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="-o/--option") from None
    return fields


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


def main() -> None:
    """Console-script entry point. Arguments that are not UTF-8 are read with
    U+FFFD replacement characters (:func:`readable_text`), whatever option they
    belong to: Python hands their bytes over as lone surrogates, which neither the
    local log nor the service can store."""
    sys.argv[1:] = [readable_text(arg) for arg in sys.argv[1:]]
    cli(prog_name="sse-chat")
