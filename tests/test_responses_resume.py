"""Responses resumed across cuts: through a proxy that cuts every connection at
random, a client that resumes with ``starting_after`` gets every event once, numbered
without gaps, and the uncut text; with the memory log and one worker, and with Redis
and two workers (a resume lands on either)."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest
import requests

from sse_chat.protocol import EventStreamDecoder

from .proxy import CuttingProxy
from .responses_schema import assert_valid_event

FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


@pytest.fixture(params=["memory-1-worker", "redis-2-workers"])
def resumable_server(request, gunicorn):
    env = {"SSE_CHAT_FAKE_DELAY_MS": "3"}
    if request.param.startswith("redis"):
        env.update(SSE_CHAT_REDIS_URL=request.getfixturevalue("redis_server").url, WEB_CONCURRENCY="2")
    return gunicorn(**env)


def read_through_cuts(url: str, body: dict, most_connections: int = 500) -> tuple[list[dict], int]:
    """Create a streamed response at ``url`` and read it to its end however often the
    connection is cut: before the response's id is known, the ``POST`` again with
    the same ``Idempotency-Key`` (the same response, from its first event); after,
    ``GET …?stream=true&starting_after=`` the last sequence number received. Returns
    the events received and how many connections it took."""
    key, events, response_id = uuid.uuid4().hex, [], None
    for connection in range(1, most_connections + 1):
        last = events[-1]["sequence_number"] if events else -1
        if response_id is None:
            request = {"method": "POST", "url": url + "/v1/responses", "json": {**body, "stream": True},
                       "headers": {"Idempotency-Key": key}}
        else:
            request = {"method": "GET", "url": f"{url}/v1/responses/{response_id}",
                       "params": {"stream": "true", "starting_after": last}}
        try:
            # httpx (the openai SDK's transport) hands on the part of a chunk that
            # came before a cut; requests drops a partly read chunk.
            with httpx.stream(**request, timeout=10) as answer:
                assert answer.status_code == 200, answer.read()
                for dispatched in EventStreamDecoder().iter_events(answer.iter_raw()):
                    event = json.loads(dispatched.data)
                    if event["sequence_number"] <= last:
                        continue  # a repeated POST starts from the first event
                    events.append(event)
                    last = event["sequence_number"]
                    if event["type"] == "response.created":
                        response_id = event["response"]["id"]
                    if event["type"] in FINAL_EVENTS:
                        return events, connection
        except httpx.HTTPError:
            pass  # cut in the middle of the headers or of a chunk
    raise AssertionError(f"no end after {most_connections} connections; {len(events)} events")


def test_a_resuming_client_gets_the_uncut_response_through_random_cuts(resumable_server):
    host, port = resumable_server.url.removeprefix("http://").split(":")
    body = {"model": "fake", "input": "Why is the sky blue?", "max_output_tokens": 150, "background": True}
    for seed in range(3):
        with CuttingProxy((host, int(port)), 300, 4000, seed=seed) as proxy:
            events, connections = read_through_cuts(proxy.url, body)
        assert connections > 5, f"seed {seed}: the proxy should have cut often"
        assert [e["sequence_number"] for e in events] == list(range(len(events))), f"seed {seed}"
        for event in events:
            assert_valid_event(event)
        final = events[-1]["response"]
        assert final["status"] == "incomplete" and final["usage"]["output_tokens"] == 150
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == final["output"][0]["content"][0]["text"]

        # The same as one uncut reading of the whole response, on whichever worker.
        with requests.get(f"{resumable_server.url}/v1/responses/{final['id']}", params={"stream": "true"},
                          stream=True, timeout=10) as answer:
            uncut = [json.loads(e.data) for e in EventStreamDecoder().iter_events(answer.iter_content(None))]
        assert events == uncut, f"seed {seed}"


def test_the_sdk_resumes_on_either_worker_and_continues_the_conversation(resumable_server):
    """With Redis, the workers share responses: resumes, retrieves, cancels and
    previous_response_id work whichever worker a request reaches."""
    client = openai.OpenAI(base_url=resumable_server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    first = client.responses.create(model="fake", input="My name is Alice.", background=True, stream=True,
                                    max_output_tokens=30)
    read = []
    for event in first:
        read.append(event.to_dict())
        if event.sequence_number == 10:
            break
    first.close()
    rid = read[0]["response"]["id"]
    for _ in range(4):  # new connections each time: either worker
        resumed = [e.to_dict() for e in client.responses.retrieve(rid, stream=True, starting_after=10)]
        assert [e["sequence_number"] for e in read + resumed] == list(range(len(read) + len(resumed)))
    finished = client.responses.retrieve(rid)
    assert finished.status == "incomplete"
    later = client.responses.create(model="fake", input="What is my name?", previous_response_id=rid)
    spelled_out = client.responses.create(model="fake", input=[
        {"role": "user", "content": "My name is Alice."}, {"role": "assistant", "content": finished.output_text},
        {"role": "user", "content": "What is my name?"}])
    assert later.output_text == spelled_out.output_text

    running = client.responses.create(model="fake", input="long", max_output_tokens=1000, background=True,
                                      extra_body={"fake": {"delay_ms": 50}})
    assert client.responses.cancel(running.id).status == "cancelled"
    client.responses.delete(running.id)
    for _ in range(4):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(running.id)
