import pytest

from sse_chat.bodies.chat import parse_chat_body, parse_chat_query
from sse_chat.errors import ApiError
from sse_chat.models import ChatRequest, Message


def test_prompt_means_one_user_message():
    assert parse_chat_body({"prompt": "Hi"}, "fake") == parse_chat_body(
        {"messages": [{"role": "user", "content": "Hi"}]}, "fake")


def test_all_fields():
    request = parse_chat_body({"prompt": "Hi", "system": "Be brief", "model": "m", "max_tokens": 5,
                               "temperature": 0.5}, "fake")
    assert request == ChatRequest((Message("system", "Be brief"), Message("user", "Hi")), "m", 5, 0.5)


@pytest.mark.parametrize("body,says", [
    ({}, "neither"),
    ({"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, "both"),
    ({"prompt": 3}, "\"prompt\" must be a string"),
    ({"prompt": ""}, "must not be empty"),
    ({"messages": []}, "non-empty list"),
    ({"messages": "hi"}, "non-empty list"),
    ({"messages": [{"role": "robot", "content": "a"}]}, "role must be one of"),
    ({"messages": [{"role": "user", "content": None}]}, "content must be a string"),
    ({"messages": ["hi"]}, "messages[0] must be an object"),
    ({"prompt": "a", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "a", "max_tokens": True}, "max_tokens"),
    ({"prompt": "a", "temperature": 3}, "temperature"),
    ({"prompt": "a", "model": 1}, "\"model\" must be a string"),
    ({"prompt": "a", "system": []}, "\"system\" must be a string"),
    ([1, 2], "must be an object"),
])
def test_invalid_bodies_are_400_with_a_message_naming_the_field(body, says):
    with pytest.raises(ApiError) as caught:
        parse_chat_body(body, "fake")
    assert caught.value.status == 400 and caught.value.type == "invalid_request"
    assert says in caught.value.message


def test_query_converts_numbers_and_rejects_bad_ones():
    assert parse_chat_query({"prompt": "a", "max_tokens": "3", "temperature": "1"}, "fake").max_tokens == 3
    for args in ({"prompt": "a", "max_tokens": "x"}, {"max_tokens": "3"}, {"prompt": "a", "temperature": "hot"}):
        with pytest.raises(ApiError):
            parse_chat_query(args, "fake")
