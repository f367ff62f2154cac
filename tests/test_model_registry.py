"""The backend table (``sse_chat/models/registry.py``): which backend serves a
model name, built once; 503 ``backend_unavailable`` naming the model and what to
set; metrics labels that never carry a caller's model name; the ``upstream_``
error-type rule; options a request gives one backend alone, known only to that
backend and the table."""

import re

import pytest

from sse_chat.config import Settings
from sse_chat.errors import ApiError
from sse_chat.models.base import UpstreamError
from sse_chat.models.fake import FAKE_OPTIONS, FakeFaults, FakeModel, InjectedFault
from sse_chat.models.openai_compat import OpenAIChatModel
from sse_chat.models.registry import (
    BACKENDS,
    DEFAULT_BACKEND,
    UPSTREAM_ERROR_PREFIX,
    ModelRegistry,
    backend_name,
    backend_options,
    is_backend_error,
    metrics_label,
    option_names,
)

from . import ROOT

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


def _spelled(option):
    return f'"fake.{option}"'


def test_the_fake_backend_alone_takes_options_and_parses_them_into_its_faults():
    assert option_names() == {"fake": FAKE_OPTIONS}
    faults = backend_options("fake", "fake", {"drop_every": 3, "error_after": 2}, _spelled)
    assert faults == FakeFaults(drop_every=3, error_after=2)
    assert faults.events_per_response == 3  # all the service reads of them


def test_options_for_a_backend_that_does_not_serve_the_model_are_a_400_naming_both():
    with pytest.raises(ApiError) as caught:
        backend_options("gpt-4o", "fake", {"drop_every": 3}, _spelled)
    assert caught.value.status == 400
    assert '"fake.drop_every"' in caught.value.message and "'gpt-4o'" in caught.value.message


def test_only_a_failure_the_request_asked_for_is_injected():
    assert InjectedFault("quota", "asked").injected and not UpstreamError("upstream_timeout", "slow").injected


def test_the_fake_models_options_are_named_only_by_the_fake_backend_and_its_table():
    """The fake model's faults stay in its module (and the table's row for it):
    the event log, the reader and the surfaces know only ``events_per_response``.
    The command line, a client that spells the options for its users, is not the
    server's."""
    own = {"sse_chat/models/fake.py", "sse_chat/models/registry.py"}
    named = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sorted((ROOT / "sse_chat").rglob("*.py"))
             if path.relative_to(ROOT).as_posix() not in own and "cli" not in path.relative_to(ROOT).parts
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r'drop_every|FakeFaults\(|InjectedFault\(|== "fake"', line)]
    assert named == []
