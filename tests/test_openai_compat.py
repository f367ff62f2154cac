"""The OpenAI-compatible surface, driven by the official openai SDK against gunicorn."""

import json

import openai
import pytest
import requests

from .event_reading import answer_text, events_of

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]


def _chat_text(upstream_server, max_tokens=None):
    body = {"messages": MESSAGES, "model": "fake", **({"max_tokens": max_tokens} if max_tokens else {})}
    return answer_text(events_of([requests.post(upstream_server.url + "/v1/chat", json=body, timeout=30).content]))


def test_streaming_gives_the_same_text_as_v1_chat_and_usage(openai_sdk, upstream_server):
    stream = openai_sdk.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=60, stream=True,
                                                stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == _chat_text(upstream_server, 60)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 60
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"


def test_non_streaming_gives_the_same_text_and_usage(openai_sdk, upstream_server):
    completion = openai_sdk.chat.completions.create(model="fake", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == _chat_text(upstream_server)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0


def test_models_list_shows_fake(openai_sdk):
    assert "fake" in [model.id for model in openai_sdk.models.list()]


def test_bad_request_is_an_openai_error_before_the_stream(openai_sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_sdk.chat.completions.create(model="fake", messages=[{"role": "robot", "content": "x"}])
    assert caught.value.status_code == 400 and "role" in caught.value.message
    body = caught.value.body
    assert set(body) >= {"message", "type", "param", "code"}


def test_upstream_failure_during_a_stream_is_an_error_frame_without_done(openai_sdk, upstream_server):
    with pytest.raises(openai.APIError) as caught:
        list(openai_sdk.chat.completions.create(model="http429", messages=MESSAGES, stream=True))
    assert "HTTP 429" in caught.value.message
    raw = requests.post(upstream_server.url + "/v1/chat/completions", timeout=30,
                        json={"model": "http500", "messages": MESSAGES, "stream": True}).text
    assert '"error":{"message":"the upstream answered HTTP 500' in raw and "[DONE]" not in raw


def test_upstream_failure_without_streaming_is_502(openai_sdk):
    with pytest.raises(openai.InternalServerError) as caught:
        openai_sdk.chat.completions.create(model="http500", messages=MESSAGES)
    assert caught.value.status_code == 502


def test_upstream_answer_passes_through(openai_sdk):
    completion = openai_sdk.chat.completions.create(model="ok", messages=MESSAGES)
    assert completion.choices[0].message.content == "Paris is the capital.\n 你好"


def test_chunks_carry_ids_and_last_event_id_resumes(upstream_server):
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": 20, "stream": True}
    whole = events_of([requests.post(upstream_server.url + "/v1/chat/completions", json=body, timeout=30).content])
    assert whole[-1].data == "[DONE]"
    resumed = events_of([requests.post(upstream_server.url + "/v1/chat/completions", json=body, timeout=30,
                                       headers={"Last-Event-ID": whole[10].last_event_id}).content])
    contents = lambda events: [json.loads(e.data)["choices"][0]["delta"].get("content")  # noqa: E731
                               for e in events if e.data.startswith("{") and json.loads(e.data)["choices"]]
    assert contents(resumed) == contents(whole[11:])


def test_the_sdk_resumes_a_running_stream_at_its_live_end(gunicorn):
    """Resuming where nothing new is there yet: no ``retry:``-only block, which the
    SDK would read as an event with empty data and fail on (JSONDecodeError)."""
    slow = gunicorn(SSE_CHAT_FAKE_DELAY_MS="300")
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with requests.post(slow.url + "/v1/chat/completions", json=body, stream=True, timeout=30) as response:
        first = events_of([next(response.iter_content(chunk_size=None))])
    sdk = openai.OpenAI(base_url=slow.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    resumed = sdk.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=4, stream=True,
                                          extra_headers={"Last-Event-ID": first[-1].last_event_id})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in resumed if chunk.choices)
    assert text == _chat_text(slow, max_tokens=4)
