"""sse_chat/gunicorn_worker.py's settle_config: gunicorn's settings read as plain
attributes in the worker, the values gunicorn's own Config gives."""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.workers.ggevent import GeventWorker

from sse_chat.gunicorn_worker import Worker, settle_config


@pytest.fixture
def cfg() -> Config:
    config = Config()
    config.set("keepalive", 75)
    config.set("worker_connections", 10_000)
    config.set("forwarded_allow_ips", "10.0.0.1,10.0.0.2")
    return config


def _every_setting(config: Config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.settings}


def test_each_setting_reads_as_before(cfg):
    before = _every_setting(cfg)
    settle_config(cfg)
    assert _every_setting(cfg) == before
    assert cfg.keepalive == 75 and cfg.forwarded_allow_ips == ["10.0.0.1", "10.0.0.2"]


def test_a_settled_setting_does_not_go_through_getattr(cfg, monkeypatch):
    looked_up = []
    original = Config.__getattr__
    monkeypatch.setattr(Config, "__getattr__", lambda self, name: looked_up.append(name) or original(self, name))
    assert cfg.keepalive == 75 and looked_up == ["keepalive"]  # (so the list can fill)
    settle_config(cfg)
    looked_up.clear()
    assert (cfg.keepalive, cfg.worker_connections, cfg.limit_request_fields) == (75, 10_000, 100)
    assert looked_up == []  # each would raise and format an AttributeError first


def test_the_properties_of_config_still_answer(cfg):
    cfg.set("bind", ["127.0.0.1:8123"])
    settle_config(cfg)
    assert cfg.address == [("127.0.0.1", 8123)]
    assert not cfg.is_ssl
    assert [str(network) for network in cfg.forwarded_allow_networks()] == ["10.0.0.1/32", "10.0.0.2/32"]
    assert cfg.worker_class_str == "sync"


def test_the_worker_settles_its_config_after_post_worker_init_before_it_serves(cfg, monkeypatch):
    seen = []
    monkeypatch.setattr(GeventWorker, "run", lambda self: seen.append(vars(self.cfg).get("keepalive")))
    worker = object.__new__(Worker)  # gunicorn's arbiter builds it; init_process and run come after the fork
    worker.cfg = cfg
    cfg.set("keepalive", 5)  # as a post_worker_init hook may (gunicorn calls it at the end of init_process)
    worker.run()
    assert seen == [5]
