"""What one key may hold in one worker (sse_chat/access/limits.py), with a controlled clock."""

import pytest

from sse_chat.access.limits import KeyLimits, StreamLimiter
from sse_chat.errors import ApiError


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _refused(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    assert caught.value.status == 429
    return caught.value


def _limiter(clock, **limits):
    return StreamLimiter(10, KeyLimits(**{"streams": 5, "events": 100, "readers": 2, "keep_s": 60.0, **limits}),
                         clock=clock)


def test_events_of_ended_streams_count_until_they_expire():
    clock = Clock()
    limiter = _limiter(clock)
    limiter.admit("a", "alice")
    limiter.release("a", events=70)
    limiter.admit("b", "alice", events=30)  # 70 + 30: at the bound
    refused = _refused(lambda: limiter.admit("c", "alice", events=1))
    assert refused.type == "too_many_events" and "SSE_CHAT_MAX_EVENTS_PER_KEY" in refused.message
    assert dict(refused.headers)["Retry-After"] == "60"  # when the 70 expire
    limiter.admit("c", "bob", events=100)  # another key has its own bound
    clock.now += 60
    limiter.admit("c2", "alice", events=60)
    assert limiter.kept_events("alice") == 90


def test_a_running_stream_holds_what_it_may_write_until_it_ends():
    limiter = _limiter(Clock())
    limiter.admit("a", "alice", events=100)
    assert _refused(lambda: limiter.admit("b", "alice", events=1)).type == "too_many_events"
    limiter.release("a", events=3)  # it wrote 3: those stay, the rest of the room is free again
    assert limiter.kept_events("alice") == 3
    limiter.admit("b", "alice", events=97)


def test_readers_per_key_are_bounded_and_released_once():
    limiter = _limiter(Clock())
    first, second = limiter.admit_reader("alice"), limiter.admit_reader("alice")
    assert _refused(lambda: limiter.admit_reader("alice")).type == "too_many_readers"
    assert _refused(lambda: limiter.check_reader("alice")).type == "too_many_readers"
    first()
    first()  # a second call changes nothing
    third = limiter.admit_reader("alice")
    assert _refused(lambda: limiter.admit_reader("alice")).type == "too_many_readers"
    for release in (second, third):
        release()
    limiter.admit_reader(None)()  # an open service counts no readers


def test_an_open_service_has_only_the_total_bound():
    limiter = StreamLimiter(2, KeyLimits(streams=1, events=1, readers=1, keep_s=60.0), clock=Clock())
    limiter.admit("a", None, events=1000)
    limiter.admit("b", None, events=1000)
    assert _refused(lambda: limiter.admit("c", None)).type == "too_many_streams"


def test_through_the_app_a_second_reader_past_the_bound_is_429_and_a_closed_one_frees_its_place(make_app):
    app = make_app(api_keys=frozenset({"k"}), max_readers_per_key=1, fake_delay_ms=20)
    client = app.test_client()
    auth = {"Authorization": "Bearer k"}
    first = client.post("/v1/chat", json={"prompt": "long", "max_tokens": 500}, headers=auth)
    chunks = first.iter_encoded()
    stream_id = next(chunks).split(b'"stream_id":"')[1].split(b'"')[0].decode()
    refused = client.get(f"/v1/streams/{stream_id}", headers=auth)
    assert refused.status_code == 429 and refused.json["error"]["type"] == "too_many_readers"
    assert client.post("/v1/chat", json={"prompt": "x"}, headers=auth).status_code == 429  # nothing started
    first.close()
    assert client.get(f"/v1/streams/{stream_id}", headers=auth).status_code == 200


def test_through_the_app_max_tokens_above_the_ceiling_is_400_naming_the_setting(make_app):
    response = make_app(max_tokens=100).test_client().post("/v1/chat", json={"prompt": "x", "max_tokens": 101})
    assert response.status_code == 400 and "SSE_CHAT_MAX_TOKENS" in response.json["error"]["message"]
