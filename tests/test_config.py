import pytest

from sse_chat.config import ConfigError, Settings


def test_defaults_when_nothing_is_set():
    settings = Settings.from_env({})
    assert (settings.model, settings.retry_ms, settings.heartbeat_s, settings.abandon_s) == ("fake", 1000, 15.0, 30.0)
    assert (settings.stream_ttl_s, settings.fake_delay_ms, settings.max_body_bytes) == (600.0, 20, 1024 * 1024)
    assert not settings.upstream_configured and settings.api_keys == frozenset()


def test_values_are_read_and_typed():
    settings = Settings.from_env({
        "SSE_CHAT_MODEL": "gemma", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "SSE_CHAT_RETRY_MS": "250",
        "SSE_CHAT_HEARTBEAT_S": "0.5", "SSE_CHAT_API_KEYS": "a, b,,", "WEB_CONCURRENCY": "3",
        "SSE_CHAT_REDIS_URL": "redis://127.0.0.1:6379/0",
    })
    assert settings.model == "gemma" and settings.upstream_configured
    assert settings.retry_ms == 250 and settings.heartbeat_s == 0.5
    assert settings.api_keys == frozenset({"a", "b"}) and settings.workers == 3
    settings.check_deployment()


@pytest.mark.parametrize("name,value,says", [
    ("SSE_CHAT_RETRY_MS", "soon", "whole number of milliseconds"),
    ("SSE_CHAT_RETRY_MS", "-1", ">= 0"),
    ("SSE_CHAT_HEARTBEAT_S", "0", "seconds > 0"),
    ("SSE_CHAT_ABANDON_S", "inf", "seconds > 0"),
    ("SSE_CHAT_MAX_BODY_BYTES", "1MB", "bytes"),
    ("OPENAI_BASE_URL", "127.0.0.1:8080", "http://"),
    ("SSE_CHAT_REDIS_URL", "localhost", "redis://"),
    ("SSE_CHAT_REDIS_URL", "redis://127.0.0.1:7000/0?cluster=maybe", "cluster=yes"),
    ("WEB_CONCURRENCY", "0", "worker processes"),
])
def test_bad_values_name_the_variable_and_the_fix(name, value, says):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value) and says in str(caught.value)


def test_several_workers_without_redis_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="SSE_CHAT_REDIS_URL") as caught:
        Settings.from_env({"WEB_CONCURRENCY": "2"}).check_deployment()
    assert "in-memory" in str(caught.value)
