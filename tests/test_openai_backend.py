"""The openai backend against a misbehaving upstream: every fault ends in one
UpstreamError of its own type, with a message that never holds the key."""

import re

import pytest
from openai.types.chat import ChatCompletionChunk

from sse_chat.models import ChatRequest, Message
from sse_chat.models.base import UpstreamError
from sse_chat.models.openai_compat import OpenAIChatModel, make_openai_client
from sse_chat.testing.servers import free_port, wait_until

from .upstream import OK_TOKENS, FakeUpstream

SECRET = "sk-test-SECRET-0123456789"


def _model(base_url, timeout_s=5.0):
    return OpenAIChatModel(make_openai_client(SECRET, base_url, timeout_s, max_retries=0), secret=SECRET)


def _request(model, max_tokens=None, temperature=None):
    return ChatRequest((Message("system", "s"), Message("user", "q")), model, max_tokens, temperature)


def test_ok_stream_maps_content_finish_reason_and_usage(upstream):
    deltas = list(_model(upstream.base_url).stream(_request("ok", max_tokens=9, temperature=0.5)))
    assert [d.content for d in deltas if d.content] == OK_TOKENS
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage.as_dict() == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
    authorization, body = upstream.requests[-1]
    assert authorization == f"Bearer {SECRET}"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 9 and body["temperature"] == 0.5
    assert body["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]


def test_chunks_are_read_as_json_not_built_into_sdk_models(upstream, monkeypatch):
    built = []
    original = ChatCompletionChunk.construct.__func__

    def construct(cls, *args, **kwargs):
        built.append(cls)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(ChatCompletionChunk, "construct", classmethod(construct))
    deltas = list(_model(upstream.base_url).stream(_request("ok")))
    assert [d.content for d in deltas if d.content] == OK_TOKENS
    assert built == []  # a ChatCompletionChunk costs about 60 us per chunk to build
    client = make_openai_client(SECRET, upstream.base_url, 5.0, max_retries=0)
    with client.chat.completions.create(model="ok", messages=[{"role": "user", "content": "q"}], stream=True) as sdk:
        list(sdk)
    assert built  # (the SDK's own way builds one per chunk, so the count above can fail)


def test_a_content_that_is_not_a_string_is_a_malformed_chunk():
    from sse_chat.models.openai_compat import _text

    assert _text({"content": None}, "content") == ""
    assert _text({}, "content") == ""
    with pytest.raises(ValueError, match=re.escape("delta.content is int")):
        _text({"content": 5}, "content")


def test_reasoning_content_becomes_reasoning(upstream):
    deltas = list(_model(upstream.base_url).stream(_request("reasoning")))
    assert "".join(d.reasoning for d in deltas) == "Thinking."
    assert "".join(d.content for d in deltas) == "Answer"


@pytest.mark.parametrize("behaviour,error_type,says", [
    ("http401", "upstream_unauthorized", "HTTP 401"),
    ("http429", "upstream_rate_limited", "HTTP 429"),
    ("http500", "upstream_server_error", "HTTP 500"),
    ("http400", "upstream_rejected", "HTTP 400"),
    ("cut", "upstream_stream_cut", "closed the connection"),
    ("malformed", "upstream_malformed_chunk", "not a valid"),
    ("inband", "upstream_error_event", "the model is overloaded"),
])
def test_each_fault_is_one_error_of_its_own_type_without_the_key(upstream, behaviour, error_type, says):
    with pytest.raises(UpstreamError) as caught:
        list(_model(upstream.base_url).stream(_request(behaviour)))
    assert caught.value.type == error_type
    assert says in caught.value.message
    assert SECRET not in caught.value.message


def test_stall_longer_than_the_read_timeout_is_upstream_timeout():
    with FakeUpstream(stall_s=3.0) as upstream, pytest.raises(UpstreamError) as caught:
        list(_model(upstream.base_url, timeout_s=0.5).stream(_request("stall")))
    assert caught.value.type == "upstream_timeout"


def test_refused_connection_is_upstream_unreachable():
    with pytest.raises(UpstreamError) as caught:
        list(_model(f"http://127.0.0.1:{free_port()}/v1").stream(_request("ok")))
    assert caught.value.type == "upstream_unreachable" and "could not connect" in caught.value.message


def test_closing_the_generator_closes_the_upstream_response(upstream):
    stream = _model(upstream.base_url).stream(_request("stall"))
    assert next(stream).content == "Par"
    stream.close()  # returns at once although the upstream is still sleeping ...
    wait_until(lambda: upstream.hangups, 2.0, "the upstream to see the connection closed")  # ... and hangs up
