"""A misbehaving OpenAI-compatible upstream for tests: the request's ``model`` picks
what it does (``ok``, ``reasoning``, ``tools``, ``ollama_tools``, ``bad_tool_index``,
``http401``, ``http429``, ``http500``, ``cut``, ``malformed``, ``inband``, ``stall``)."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OK_TOKENS = ["Paris", " is", " the", " capital", ".\n", " 你好"]

#: The two parallel calls of the ``tools`` behaviour: (id, name, argument fragments).
TOOL_CALLS = [
    ("call_weather_1", "get_weather", ['{"ci', 'ty": "Pa', 'ris", "unit": ', '"celsius"}']),
    ("call_time_2", "get_time", ['{"tz": ', '"Europe/Paris"', '}']),
]


def _chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None and finish is None else [
        {"index": 0, "delta": delta or {}, "finish_reason": finish}]
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.headers.get("Authorization"), body))
        behaviour = body["model"]
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if behaviour.startswith("http"):
            status = int(behaviour[4:])
            return self._json(status, {"error": {"message": f"refused, key {key} is not welcome ({status})",
                                                 "type": "x"}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        getattr(self, "_" + behaviour)()

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, body: dict) -> None:
        self._send("data: " + json.dumps(body) + "\n\n")

    def _end(self) -> None:
        self._send("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _ok(self) -> None:
        self._event(_chunk({"role": "assistant", "content": ""}))
        for token in OK_TOKENS:
            self._event(_chunk({"content": token}))
        self._event(_chunk({}, "stop"))
        self._event(_chunk(usage={"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}))
        self._end()

    def _reasoning(self) -> None:
        self._event(_chunk({"reasoning_content": "Think"}))
        self._event(_chunk({"reasoning_content": "ing."}))
        self._event(_chunk({"content": "Answer"}))
        self._event(_chunk({}, "stop"))
        self._end()

    def _tools(self) -> None:
        """Two parallel tool calls in fragments, each call's first fragment with its
        id and name, as OpenAI streams them; when the last message is a ``tool``
        result, an answer that quotes every result instead."""
        messages = self.server.requests[-1][1]["messages"]
        if messages[-1]["role"] == "tool":
            results = [m["content"] for m in messages if m["role"] == "tool"]
            self._event(_chunk({"role": "assistant", "content": ""}))
            for text in ["Results:", *(f" {result};" for result in results)]:
                self._event(_chunk({"content": text}))
            self._event(_chunk({}, "stop"))
            return self._end()
        self._event(_chunk({"role": "assistant", "content": None}))
        for index, (call_id, name, pieces) in enumerate(TOOL_CALLS):
            self._event(_chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                                "function": {"name": name, "arguments": ""}}]}))
            for piece in pieces:
                self._event(_chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        self._event(_chunk({}, "tool_calls"))
        self._event(_chunk(usage={"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}))
        self._end()

    def _ollama_tools(self) -> None:
        """Parallel calls as Ollama streams them: every call at index 0, whole in
        one fragment each, then ``finish_reason`` ``"stop"``."""
        for call_id, name, pieces in TOOL_CALLS:
            self._event(_chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                "function": {"name": name, "arguments": "".join(pieces)}}]}))
        self._event(_chunk({}, "stop"))
        self._end()

    def _bad_tool_index(self) -> None:
        self._event(_chunk({"tool_calls": [{"index": -1, "id": "call_x", "type": "function",
                                            "function": {"name": "f", "arguments": "{}"}}]}))
        self._event(_chunk({}, "tool_calls"))
        self._end()

    def _cut(self) -> None:
        self._event(_chunk({"content": "Par"}))
        self.wfile.write(b"ff\r\ndata: {\"trunc")
        self.wfile.flush()
        self.close_connection = True

    def _malformed(self) -> None:
        self._event(_chunk({"content": "Par"}))
        self._send("data: {this is not json\n\n")
        self._end()

    def _inband(self) -> None:
        self._event(_chunk({"content": "Par"}))
        self._event({"error": {"message": "the model is overloaded", "type": "server_error"}})
        self._end()

    def _stall(self) -> None:
        """One chunk, then silence for ``stall_s``; notes in ``hangups`` when the
        client closes the connection meanwhile (the socket reads EOF)."""
        self._event(_chunk({"content": "Par"}))
        readable, _, _ = select.select([self.connection], [], [], self.server.stall_s)
        if readable and not self.connection.recv(1, socket.MSG_PEEK):
            self.server.hangups.append(time.monotonic())
            return
        self._end()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up (as a cancelled stream does) is not an error here


class FakeUpstream:
    """Serves on a free loopback port in a thread; ``base_url`` ends in ``/v1``."""

    def __init__(self, stall_s: float = 5.0) -> None:
        self.server = _QuietServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.requests = []
        self.server.hangups = []
        self.server.stall_s = stall_s
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def requests(self) -> list:
        return self.server.requests

    @property
    def hangups(self) -> list:
        """When (monotonic seconds) a client hung up on a stalled stream."""
        return self.server.hangups

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
