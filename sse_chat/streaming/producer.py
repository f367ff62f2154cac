"""The producer: runs a model and appends its answer to the event log as events.

Generation is decoupled from HTTP: a producer runs in its own thread (a greenlet
under gunicorn's gevent worker) and keeps going while readers come and go, until
the answer ends, a ``DELETE`` cancels it, or no reader has been attached for
``abandon_s`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..background import spawn
from ..eventlog import EventLog, StreamFull, StreamLost, StreamNotFound
from ..metrics import Metrics
from ..models import ChatModel, ChatRequest, Delta, Message, ToolCall, UpstreamError, Usage
from ..models.registry import is_backend_error, metrics_label
from ..protocol import EventType, ToolCalls, content_frame, event_frame
from ..protocol import error_data as error_body
from ..tools.registry import ServerTool, ToolRegistry

log = logging.getLogger(__name__)

#: The ``reason`` label of streams that ended with a failure the request asked
#: for (``UpstreamError.injected``): its error type is the caller's choice, so
#: not a label value.
INJECTED_REASON = "injected_fault"
#: How often (seconds) the producer looks at cancel requests and readers; looking
#: per token would cost a round trip per token with a remote log.
CONTROL_INTERVAL_S = 0.2


@dataclass(frozen=True)
class ProducerLimits:
    """``abandon_s``: seconds without a reader before generation stops;
    ``tool_timeout_s``: the longest a server tool may run (seconds);
    ``max_tool_steps``: how many times the model is called again with server
    tools' results (the call after the last of them offers no server tools)."""

    abandon_s: float
    tool_timeout_s: float = 30.0
    max_tool_steps: int = 8


@dataclass
class _Answer:
    """What one call of the model gave: its ``finish_reason``, ``usage``, the text
    of its ``token``s and its whole tool calls (ids filled in)."""

    finish_reason: str
    usage: Usage | None
    text: str
    calls: list[dict[str, str]]


class _Stop(Exception):
    def __init__(self, terminal: tuple[EventType, dict]) -> None:
        self.terminal = terminal


class Producer:
    """Writes one stream: ``start``, then ``token``/``reasoning``/``tool_call``
    events, then exactly one terminal event (``done`` or ``error``), ids
    ``{stream_id}:0``, ``:1``, … ``done`` also carries the assembled
    ``tool_calls`` when the answer called the client's tools.

    With server ``tools`` (docs/tools.md) the model is offered them beside the
    request's own; when it calls them, the producer runs each call (the only
    place that runs one: readers only read the log), appends a ``tool_result``,
    and calls the model again with the calls and results added to the
    conversation, up to ``limits.max_tool_steps`` times.

    Call :meth:`run` (blocking) or :meth:`start` (in the background, through
    ``spawn``: :func:`sse_chat.background.spawn`'s signature; the service passes its
    kept greenlets, ``Services.runners.spawn``).
    """

    def __init__(self, event_log: EventLog, stream_id: str, model: ChatModel, request: ChatRequest,
                 limits: ProducerLimits, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, on_end: Callable[[], None] | None = None,
                 metrics: Metrics | None = None, start_extra: dict[str, Any] | None = None,
                 tools: ToolRegistry | None = None,
                 spawn: Callable[[Callable[[], None], str], None] = spawn) -> None:
        self._log = event_log
        self._spawn = spawn
        self._start_extra = start_extra or {}
        self._stream_id = stream_id
        self._model = model
        self._request = request
        self._limits = limits
        self._clock = clock
        self._created = int(wall_clock())
        self._seq = 0
        self._on_end = on_end
        self._metrics = metrics
        self._tools = tools if tools else None
        self._started_at = clock()
        # The first look, too, comes an interval after the start: by then a Redis
        # log's writes have brought the fields back, so starting a stream costs no
        # HMGET of its own (one per stream before: ~1,000 in a 1,000-stream run).
        self._next_control_check = self._started_at + CONTROL_INTERVAL_S
        self._first_token_s: float | None = None
        self._tokens = 0
        self._injected = False

    @property
    def events_written(self) -> int:
        """Events appended so far (``start`` included)."""
        return self._seq

    def create_stream(self, owner: str | None) -> None:
        """Create the stream in the log, owned by ``owner``, with its ``start`` event
        (seq 0; its data also holds the producer's ``start_extra`` keys, which a
        surface keeps there for any worker to read), keeping the request's
        ``events_per_response`` with it for the readers of every response. Called before
        the response begins, so the first read finds it.

        Raises:
            EventLogUnavailable: the log's store cannot be reached.
        """
        frame = self._encode(EventType.START, {"stream_id": self._stream_id, "model": self._request.model,
                                               "created": self._created, **self._start_extra})
        self._log.create(self._stream_id, owner, frame, events_per_response=self._request.events_per_response)
        self._seq = 1

    def start(self) -> None:
        """Run :meth:`run` in the background (``spawn``: a greenlet under gevent,
        else a daemon thread) and return at once."""
        self._spawn(self.run, f"producer-{self._stream_id}")

    def run(self) -> None:
        """Generate the answer and append every event, ending with one terminal event.
        Never raises: every failure becomes an ``error`` event. Calls ``on_end`` last."""
        if self._metrics is not None:
            self._metrics.count(self._metrics.active_streams)
            self._metrics.count(self._metrics.streams_started, self._backend_label())
        try:
            self._run()
        finally:
            if self._metrics is not None:
                self._metrics.count(self._metrics.active_streams, amount=-1)
            if self._on_end is not None:
                self._on_end()

    def _run(self) -> None:
        log.debug("stream %s started: model=%s", self._stream_id, self._request.model)  # INFO: its end, with figures
        with self._lease():
            try:
                event_type, data = self._generate()
            except _Stop as stop:
                event_type, data = stop.terminal
            except StreamLost:
                log.warning("stream %s was declared lost while its producer ran; stopping", self._stream_id)
                return
            except StreamNotFound:  # a finished stream expires; one still written to was deleted
                log.info("stream %s was deleted while its producer ran; stopping", self._stream_id)
                return
            except Exception:  # a bug of ours: still end the stream, and say so in the log
                log.exception("producer of stream %s failed", self._stream_id)
                event_type = EventType.ERROR
                data = error_body("internal_error", "the server failed while generating; try again")
            try:
                self._append(event_type, data, terminal=True)
            except Exception:
                log.exception("could not write the terminal event of stream %s", self._stream_id)
                return
        self._report_end(event_type, data)

    def _report_end(self, event_type: EventType, data: dict) -> None:
        reason = data.get("finish_reason") or data.get("error", {}).get("type") or "unknown"
        ttft_ms = "-" if self._first_token_s is None else f"{self._first_token_s * 1000:.0f}"
        log.info("stream %s ended: %s %s model=%s events=%d tokens=%d ttft_ms=%s duration_ms=%.0f",
                 self._stream_id, event_type, reason, self._request.model, self._seq, self._tokens, ttft_ms,
                 (self._clock() - self._started_at) * 1000)
        if self._metrics is not None:
            if self._injected:
                self._metrics.count(self._metrics.streams_ended, event_type.value, INJECTED_REASON)
                return
            self._metrics.count(self._metrics.streams_ended, event_type.value, reason)
            if is_backend_error(reason):
                self._metrics.count(self._metrics.upstream_errors, reason)

    @contextmanager
    def _lease(self) -> Iterator[None]:
        """Renew the producer's lease every ``lease_renewal_s`` in a helper thread
        (greenlet) while generating, also while the upstream is silent."""
        interval = self._log.lease_renewal_s
        if interval is None:
            yield
            return
        stopped = threading.Event()

        def renew() -> None:
            while not stopped.wait(interval):
                try:
                    self._log.keep_alive(self._stream_id)
                except Exception:
                    log.exception("could not renew the lease of stream %s", self._stream_id)

        spawn(renew, f"lease-{self._stream_id}")
        try:
            yield
        finally:
            stopped.set()

    def _generate(self) -> tuple[EventType, dict]:
        """The whole answer: one call of the model, or with server tools one per
        step; returns the terminal event."""
        if self._tools is None:
            return self._finish([self._answer_or_stop(self._request)])
        request, answers = self._offer_server_tools(self._request, with_tools=True), []
        for step in range(self._limits.max_tool_steps + 1):
            answer = self._answer_or_stop(request)
            answers.append(answer)
            ours = [call for call in answer.calls if self._server_tool(call["name"], request)]
            if not ours:
                break
            results = [self._run_tool(call) for call in ours]
            if len(ours) < len(answer.calls):
                break  # the client's calls end the stream; it has seen ours and their results
            last_step = step + 1 == self._limits.max_tool_steps
            request = self._offer_server_tools(_continued(request, answer, results), with_tools=not last_step)
        return self._finish(answers)

    def _answer_or_stop(self, request: ChatRequest) -> _Answer:
        """:meth:`_answer`, with the ways a stream stops early raised as :class:`_Stop`."""
        try:
            return self._answer(request)
        except _Stop:
            raise
        except UpstreamError as exc:
            self._next_control_check = 0.0
            self._check_control()  # a DELETE during a silent upstream still ends as cancelled
            self._injected = exc.injected
            raise _Stop((EventType.ERROR, error_body(exc.type, exc.message))) from None
        except StreamFull as exc:
            raise _Stop((EventType.ERROR, error_body(
                "stream_too_long", f"the answer exceeded the server's bound on events per stream ({exc})"))) from None

    def _answer(self, request: ChatRequest) -> _Answer:
        """Stream one call of the model into the log: the hot path, one turn per delta."""
        deltas: Iterator[Delta] = self._model.stream(request)
        finish_reason, usage = "stop", None
        tool_calls = ToolCalls()
        text: list[str] = []
        clock = self._clock
        try:
            # a delta's fields unpacked in one step: cheaper than reading them by name (a descriptor call each)
            for content, reasoning, delta_finish_reason, delta_usage, fragments in deltas:
                if clock() >= self._next_control_check:
                    self._check_control()
                if reasoning:
                    self._append_content(EventType.REASONING, reasoning)
                if content:
                    self._append_token(content)
                    text.append(content)
                if fragments:
                    for fragment in fragments:
                        self._append(EventType.TOOL_CALL, tool_calls.add(fragment.as_event_data()))
                if delta_finish_reason:
                    finish_reason, usage = delta_finish_reason, delta_usage
        finally:
            close = getattr(deltas, "close", None)
            if close is not None:
                close()
        calls = tool_calls.finished()
        for number, call in enumerate(calls):
            call["id"] = call["id"] or f"call_{self._stream_id}_{self._seq}_{number}"
        return _Answer(finish_reason, usage, "".join(text), calls)

    def _finish(self, answers: list[_Answer]) -> tuple[EventType, dict]:
        """The ``done`` event after the model's last answer: its ``finish_reason``
        (``tool_calls`` when it called the client's tools), the usage of every
        call added up (``None`` unless each reported it), the client's calls."""
        last = answers[-1]
        calls = [call for call in last.calls if self._tools is None or self._tools.get(call["name"]) is None
                 or self._client_declares(call["name"])]
        finish_reason = last.finish_reason
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"  # OpenAI (named tool_choice), vLLM and Ollama say "stop"
        elif not calls and last.calls:
            finish_reason = "stop"  # only server tools were called, and no step was left to answer
        usages = [answer.usage for answer in answers]
        usage = None if None in usages else Usage(sum(u.prompt_tokens for u in usages if u),
                                                  sum(u.completion_tokens for u in usages if u))
        done: dict[str, Any] = {"finish_reason": finish_reason, "usage": usage.as_dict() if usage else None}
        if calls:
            done["tool_calls"] = calls
        return EventType.DONE, done

    def _client_declares(self, name: str | None) -> bool:
        return any(_tool_name(tool) == name for tool in self._request.tools or ())

    def _server_tool(self, name: str, request: ChatRequest) -> ServerTool | None:
        """The server tool a call of ``name`` runs: one of ours that ``request``
        offered and the client does not declare itself (the client's wins)."""
        tool = self._tools.get(name) if self._tools is not None else None
        if tool is None or self._client_declares(name) or tool.definition not in (request.tools or ()):
            return None
        return tool

    def _offer_server_tools(self, request: ChatRequest, *, with_tools: bool) -> ChatRequest:
        """``request`` with the server tools offered after the client's (but for
        names the client declares), or without any of them (``with_tools`` false)."""
        client_tools = tuple(self._request.tools or ())
        ours: tuple[dict[str, Any], ...] = ()
        if with_tools and self._tools is not None:
            ours = tuple(dict(tool) for tool in self._tools.definitions
                         if not self._client_declares(_tool_name(tool)))
        tools = client_tools + ours
        return replace(request, tools=tools or None)

    def _run_tool(self, call: dict[str, str]) -> Message:
        """Run one call of a server tool, append its ``tool_result``; returns the
        ``tool`` message for the model."""
        tool = self._tools.get(call["name"]) if self._tools is not None else None
        assert tool is not None
        started = self._clock()
        outcome = tool.call(call["arguments"], self._limits.tool_timeout_s)
        log.info("stream %s: tool %s %s in %.0f ms", self._stream_id, tool.name,
                 outcome.error_type or "answered", (self._clock() - started) * 1000)
        if self._metrics is not None:
            self._metrics.count(self._metrics.tool_calls, tool.name, outcome.error_type or "ok")
        self._append(EventType.TOOL_RESULT, outcome.as_event_data(call["id"], tool.name))
        self._next_control_check = 0.0
        self._check_control()  # a DELETE while the tool ran ends the stream now
        return Message("tool", outcome.as_message_content(), tool_call_id=call["id"])

    def _backend_label(self) -> str:
        """The backend's metrics label (``fake`` or ``upstream``, from the backend
        table): model names come from callers, so they would make metric series
        without bound."""
        return metrics_label(self._request.model)

    def _check_control(self) -> None:
        now = self._clock()
        if now < self._next_control_check:
            return
        self._next_control_check = now + CONTROL_INTERVAL_S
        control = self._log.control(self._stream_id)
        if control.cancelled:
            raise _Stop((EventType.DONE, {"finish_reason": "cancelled", "usage": None}))
        if control.unattended_s > self._limits.abandon_s:
            log.info("stream %s abandoned: no reader for %.0f s", self._stream_id, self._limits.abandon_s)
            raise _Stop((EventType.ERROR, error_body(
                "stream_abandoned",
                f"no client was attached for {self._limits.abandon_s:g} s, so generation stopped")))

    def _append(self, event_type: EventType, data: dict, *, terminal: bool = False) -> None:
        self._log.append(self._stream_id, self._seq, self._encode(event_type, data), terminal=terminal)
        self._seq += 1

    def _append_token(self, text: str) -> None:
        """Append a ``token`` event, as :meth:`_append_content` does, and count it;
        the first one's time is the stream's time to first token. The hottest
        path of all: once per token, in one call."""
        self._tokens += 1
        if self._first_token_s is None:
            self._first_token_s = self._clock() - self._started_at
            if self._metrics is not None:
                self._metrics.observe(self._metrics.time_to_first_token, self._first_token_s)
        seq = self._seq
        self._log.append(self._stream_id, seq, content_frame(EventType.TOKEN, self._stream_id, seq, text))
        self._seq = seq + 1

    def _append_content(self, event_type: EventType, text: str) -> None:
        """Append a ``token`` or ``reasoning`` event, ``{"content": text}``, encoded
        without building a dict or an event object (a model's tokens go through
        :meth:`_append_token`, which also counts them)."""
        frame = content_frame(event_type, self._stream_id, self._seq, text)
        self._log.append(self._stream_id, self._seq, frame)
        self._seq += 1

    def _encode(self, event_type: EventType, data: dict) -> bytes:
        return event_frame(event_type, self._stream_id, self._seq, data)


def _tool_name(tool: Any) -> str | None:
    """The function name of an OpenAI tool object, or ``None``."""
    function = tool.get("function") if isinstance(tool, dict) else None
    return function.get("name") if isinstance(function, dict) else None


def _continued(request: ChatRequest, answer: _Answer, results: list[Message]) -> ChatRequest:
    """``request`` with the model's answer (its text and tool calls) and the
    results of those calls appended to the conversation."""
    calls = tuple(ToolCall(call["id"], call["name"], call["arguments"]) for call in answer.calls)
    assistant = Message("assistant", answer.text or None, tool_calls=calls)
    return replace(request, messages=(*request.messages, assistant, *results))
