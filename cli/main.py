"""The ``sse-chat`` command line. Commands stay thin: they turn options into values
and hand them to :mod:`cli.ask` and :mod:`cli.serve`."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass

import click

from sse_chat.client import ChatClient, check_base_url
from sse_chat.protocol import EventId

from .ask import AskRequest, ExitCode, StreamFollower
from .fake_options import fake_options
from .output import JsonOutput, MarkdownOutput, RawOutput, TextOutput, usage_line
from .prompt import EmptyPrompt, build_prompt

DEFAULT_URL = "http://127.0.0.1:8000"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sse-chat")
def cli() -> None:
    """Stream chat answers over Server-Sent Events."""


@cli.command()
@click.argument("prompt", nargs=-1)
@click.option("-u", "--url", envvar="SSE_CHAT_URL", help=f"Service URL [env SSE_CHAT_URL; default {DEFAULT_URL}].")
@click.option("-m", "--model", help="Model name (the server's SSE_CHAT_MODEL when not given).")
@click.option("-s", "--system", help="System prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Most tokens to generate.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature, 0 to 2.")
@click.option("--fake", is_flag=True, help="Use the fake model; with no --url, serve it in this process.")
@click.option("--raw", "mode", flag_value="raw", help="Write the event stream's bytes as received.")
@click.option("--json", "mode", flag_value="json", help="Write each event as one JSON line.")
@click.option("--resume", "resume_from", metavar="EVENT_ID", help="Attach to a stream and print what follows EVENT_ID.")
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
def ask(prompt: tuple[str, ...], url: str | None, model: str | None, system: str | None,
        max_tokens: int | None, temperature: float | None, fake: bool, mode: str | None,
        resume_from: str | None, retries: int, show_reasoning: bool, markdown: bool, api_key: str | None,
        fake_pairs: tuple[str, ...], show_usage: bool) -> None:
    """Ask PROMPT and write the answer to stdout as it streams.

    Words are joined; piped stdin comes first; a lone - reads stdin only.
    """
    body = None
    if url:
        try:
            check_base_url(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from None
    if resume_from and EventId.parse(resume_from) is None:
        raise click.BadParameter("expected an event id STREAM_ID:SEQ, as sse-chat printed it", param_hint="--resume")
    if not resume_from:
        try:
            text = build_prompt(prompt, sys.stdin)
        except EmptyPrompt as exc:
            raise click.UsageError(str(exc)) from None
        body = _chat_body(text, "fake" if fake else model, system, max_tokens, temperature, _faults(fake_pairs))
    output = _output(sys.stdout.buffer, mode, markdown)
    try:
        status = _run(output, url, fake, AskRequest(body, resume_from),
                      _ClientOptions(api_key, retries, show_reasoning, show_usage))
    finally:
        _finish(output)
    sys.exit(status)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run the service under gunicorn with gevent workers (settings from the environment)."""
    from .serve import exec_gunicorn

    exec_gunicorn(f"{host}:{port}")


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


def _run(output, url: str | None, fake: bool, request: AskRequest, options: _ClientOptions) -> int:
    in_process = fake and not url
    with ExitStack() as stack:
        base_url = _in_process(stack) if in_process else url or DEFAULT_URL
        client = ChatClient(base_url, options.api_key, options.retries, on_chunk=output.raw,
                            on_retry=_report_retry)
        follower = StreamFollower(client, output, sys.stderr, show_reasoning=options.show_reasoning)
        try:
            status = follower.run(request)
        except KeyboardInterrupt:
            return _interrupted(follower, resumable=not in_process)
        except BrokenPipeError:
            _silence_stdout()
            return ExitCode.BROKEN_PIPE
        if options.show_usage:
            _finish(output)
            sys.stderr.write(usage_line(follower.done))
        return status


def _report_retry(reason: str, wait_s: float, attempt: int, retries: int) -> None:
    sys.stderr.write(f"sse-chat: {reason}; reconnecting in {wait_s:.1f} s (attempt {attempt} of {retries})\n")


def _interrupted(follower: StreamFollower, *, resumable: bool) -> int:
    """Ctrl-C: ask the server to stop the stream and say how to read the rest
    (not for the in-process server, which ends with this process)."""
    cancelled = follower.cancel()
    sys.stderr.write("\nsse-chat: interrupted" + ("; the server stopped the stream" if cancelled else "") + "\n")
    if resumable and follower.stream_id and follower.last_event_id:
        sys.stderr.write(f"sse-chat: to read the rest, run: {follower.resume_hint()}\n")
    return ExitCode.INTERRUPTED


def _in_process(stack: ExitStack) -> str:
    from sse_chat.config import ConfigError, Settings

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


def _silence_stdout() -> None:
    """After the reader of stdout went away, point stdout at /dev/null so that the
    interpreter's final flush does not print a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sse-chat")
