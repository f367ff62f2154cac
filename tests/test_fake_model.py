import random

from sse_chat.models import ChatRequest, Message, fake
from sse_chat.models.fake import FakeModel


def _request(prompt="Why is the sky blue?", max_tokens=None):
    return ChatRequest((Message("user", prompt),), "fake", max_tokens)


def _stream(request):
    return list(FakeModel(delay_s=0, sleep=lambda s: None).stream(request))


def test_same_request_same_tokens_and_different_prompt_different_tokens():
    assert _stream(_request(max_tokens=50)) == _stream(_request(max_tokens=50))
    assert _stream(_request(max_tokens=50)) != _stream(_request("other", max_tokens=50))


def test_max_tokens_gives_exactly_that_many_tokens_and_length():
    deltas = _stream(_request(max_tokens=777))
    assert len([d for d in deltas if d.content]) == 777
    assert deltas[-1].finish_reason == "length" and deltas[-1].usage.completion_tokens == 777


def test_without_max_tokens_a_short_reply_echoes_the_prompt():
    deltas = _stream(_request("tell me about été"))
    text = "".join(d.content for d in deltas)
    assert "tell me about été" in text and len(deltas) < 60
    assert deltas[-1].finish_reason == "stop"


def test_tokens_mix_lengths_non_ascii_and_newlines():
    tokens = [d.content for d in _stream(_request(max_tokens=400)) if d.content]
    assert len({len(t) for t in tokens}) > 3
    assert any("你好" in t for t in tokens) and any("é" in t for t in tokens) and any("\n" in t for t in tokens)


def test_delay_is_slept_before_each_token():
    slept = []
    list(FakeModel(delay_s=0.02, sleep=slept.append).stream(_request(max_tokens=5)))
    assert slept == [0.02] * 5


def test_a_long_answer_is_drawn_a_bounded_batch_at_a_time_in_the_order_of_one_draw_per_token():
    request = _request(max_tokens=fake.DRAWS_AT_ONCE * 2 + 5)
    choice = random.Random(fake._seed(request)).choice  # the draws, one per token, as the text was always made
    one_at_a_time = [choice(fake.VOCABULARY) for _ in range(request.max_tokens)]
    assert fake.fake_tokens(request) == one_at_a_time
    assert [d.content for d in _stream(request) if d.content] == one_at_a_time
    batches = [len(batch) for batch in fake._draws(request, fake.VOCABULARY)]
    assert batches == [fake.DRAWS_AT_ONCE, fake.DRAWS_AT_ONCE, 5]
