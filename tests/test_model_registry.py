"""The backend table (``sse_chat/models/registry.py``): which backend serves a
model name, built once; 503 ``backend_unavailable`` naming the model and what to
set; metrics labels that never carry a caller's model name; the ``upstream_``
error-type rule."""

import pytest

from sse_chat.config import Settings
from sse_chat.errors import ApiError
from sse_chat.models.fake import FakeModel
from sse_chat.models.openai_compat import OpenAIChatModel
from sse_chat.models.registry import (
    BACKENDS,
    DEFAULT_BACKEND,
    UPSTREAM_ERROR_PREFIX,
    ModelRegistry,
    backend_name,
    is_backend_error,
    metrics_label,
)

NO_UPSTREAM = Settings.from_env({})
UPSTREAM = NO_UPSTREAM.with_overrides(openai_base_url="http://127.0.0.1:9/v1", model="gemma-3-270m")


def test_fake_is_served_by_the_fake_backend_built_once():
    models = ModelRegistry(NO_UPSTREAM)
    fake = models.resolve("fake")
    assert isinstance(fake, FakeModel) and models.resolve("fake") is fake


def test_every_other_model_name_goes_to_the_upstream_when_one_is_configured():
    models = ModelRegistry(UPSTREAM)
    upstream = models.resolve("gpt-4o-mini")
    assert isinstance(upstream, OpenAIChatModel) and models.resolve("anything else") is upstream
    assert models.model_names() == ["fake", "gemma-3-270m"]


def test_without_an_upstream_another_model_is_a_503_that_names_it_and_what_to_set():
    models = ModelRegistry(NO_UPSTREAM)
    with pytest.raises(ApiError) as raised:
        models.resolve("gpt-x")
    assert (raised.value.status, raised.value.type) == (503, "backend_unavailable")
    assert "model 'gpt-x' needs an OpenAI-compatible upstream" in raised.value.message
    assert "OPENAI_BASE_URL" in raised.value.message
    assert models.model_names() == ["fake"]
    assert isinstance(models.resolve("fake"), FakeModel)   # the fake backend still serves


@pytest.mark.parametrize(("model", "backend", "label"), [
    ("fake", "fake", "fake"), ("gpt-4o", DEFAULT_BACKEND, "upstream"), ("Fake", DEFAULT_BACKEND, "upstream"),
    ("", DEFAULT_BACKEND, "upstream"),
])
def test_a_model_name_selects_a_backend_and_a_bounded_metrics_label(model, backend, label):
    assert backend_name(model) == backend
    assert metrics_label(model) == label


def test_metrics_labels_are_the_tables_own_names():
    assert sorted(b.metrics_label for b in BACKENDS.values()) == ["fake", "upstream"]


@pytest.mark.parametrize(("error_type", "from_backend"), [
    ("upstream_timeout", True), ("upstream_rate_limited", True), ("upstream_error", True),
    ("stream_lost", False), ("tool_timeout", False), ("internal_error", False), ("upstream", False),
])
def test_error_types_of_backend_failures_begin_with_upstream_(error_type, from_backend):
    assert UPSTREAM_ERROR_PREFIX == "upstream_"
    assert is_backend_error(error_type) is from_backend
