"""Eight upstream behaviours, end to end: gunicorn in front of a misbehaving
OpenAI-compatible upstream, and ``sse-chat ask`` as the client."""

import json
import time

import pytest

from sse_chat.testing.servers import run_cli

SECRET = "sk-fault-SECRET-31337"

BEHAVIOURS = {
    "ok": (0, None),
    "http401": (1, "upstream_unauthorized"),
    "http429": (1, "upstream_rate_limited"),
    "http500": (1, "upstream_server_error"),
    "cut": (1, "upstream_stream_cut"),
    "malformed": (1, "upstream_malformed_chunk"),
    "inband": (1, "upstream_error_event"),
    "stall": (1, "upstream_timeout"),
}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from sse_chat.testing.servers import start_gunicorn

    from .upstream import FakeUpstream

    with FakeUpstream(stall_s=10.0) as upstream:
        server = start_gunicorn(tmp_path_factory.mktemp("faults"), OPENAI_BASE_URL=upstream.base_url,
                                OPENAI_API_KEY=SECRET, SSE_CHAT_UPSTREAM_TIMEOUT_S="2",
                                SSE_CHAT_UPSTREAM_MAX_RETRIES="0")
        yield server
        server.stop()


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_each_upstream_behaviour_ends_cleanly_with_one_error_and_no_leaked_key(service, behaviour):
    exit_code, error_type = BEHAVIOURS[behaviour]
    began = time.monotonic()
    result = run_cli("ask", "--url", service.url, "--json", "-m", behaviour, "What is the capital of France?")
    took_s = time.monotonic() - began
    assert took_s < 30
    assert result.returncode == exit_code, result.stderr
    assert b"Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "start" and events.count("done") + events.count("error") == 1
    if error_type is None:
        assert events[-1] == "done"
    else:
        error = json.loads(lines[-1]["data"])["error"]
        assert events[-1] == "error" and error["type"] == error_type
        assert error_type.encode() in result.stderr and error["message"]
    for text in (result.stdout, result.stderr, service.log().encode()):
        assert SECRET.encode() not in text
    plain = run_cli("ask", "--url", service.url, "-m", behaviour, "q")
    assert plain.returncode == exit_code and b"Traceback" not in plain.stderr


def test_delete_while_the_upstream_is_silent_still_ends_as_cancelled(service):
    import requests

    from .event_reading import events_of, stream_of

    with requests.post(service.url + "/v1/chat", json={"prompt": "q", "model": "stall"}, stream=True,
                       timeout=30) as response:
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks)
        stream_id = stream_of(events_of([first])[0].last_event_id)
        assert requests.delete(f"{service.url}/v1/streams/{stream_id}", timeout=10).status_code == 202
        events = events_of([first, *chunks])
    assert json.loads(events[-1].data) == {"finish_reason": "cancelled", "usage": None}
