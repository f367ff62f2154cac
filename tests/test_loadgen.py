"""The load generator the benchmarks measure with (sse_chat/testing/loadgen.py):
its response decoder, and its recording mode, which must record what the live
mode records, at the same times."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from bench.loadgen_cli import summarize
from sse_chat.testing.loadgen import (
    Recording,
    ResponseDecoder,
    StreamResult,
    decode_recording,
    run_stream,
)

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%X\r\n%b\r\n" % (len(data), data)


def frame(seq: int, event: str, data: str) -> bytes:
    return f"id: s1:{seq}\nevent: {event}\ndata: {data}\n\n".encode()


CHUNKS = [chunk(frame(0, "start", "{}")),
          chunk(frame(1, "token", '{"content":"a"}') + frame(2, "token", '{"content":"b"}')),  # two events
          chunk(frame(3, "done", '{"finish_reason":"stop"}'))]
RESPONSE = HEAD + b"".join(CHUNKS) + b"0\r\n\r\n"
#: Where each event's chunk ends, with its CRLF: the byte that completes the event.
EVENT_ENDS = [len(HEAD) + sum(len(c) for c in CHUNKS[:n + 1]) for n in (0, 1, 1, 2)]


def reads_of(data: bytes, cuts: list[int]) -> list[tuple[float, bytes]]:
    """``data`` split at ``cuts``, the n-th read at time n."""
    bounds = [0, *cuts, len(data)]
    return [(float(n), data[a:b]) for n, (a, b) in enumerate(itertools.pairwise(bounds))]


def decoded_live(reads: list[tuple[float, bytes]]) -> StreamResult:
    result = StreamResult()
    decoder = ResponseDecoder(result)
    for now, data in reads:
        decoder.feed(data, now)
    assert decoder.over
    return result


def decoded_from_recording(reads: list[tuple[float, bytes]], lost: str | None = None) -> StreamResult:
    result = StreamResult(recording=Recording(list(reads), lost))
    return decode_recording(result)


def test_a_whole_response_in_one_read_gives_every_event_and_the_terminal_type():
    result = decoded_live([(7.0, RESPONSE)])
    assert result.seqs == [0, 1, 2, 3] and result.gap_free
    assert result.stream_id == "s1" and result.status == 200 and result.error is None
    assert result.first_event == 7.0 and result.event_times == [7.0] * 4


def test_an_event_arrives_at_the_read_that_completed_it_wherever_the_reads_are_cut():
    for cut in range(1, len(RESPONSE)):
        result = decoded_live(reads_of(RESPONSE, [cut]))
        assert result.seqs == [0, 1, 2, 3], cut
        # the event completed in the first read (time 0) when its chunk ended before the cut
        assert result.event_times == [0.0 if end <= cut else 1.0 for end in EVENT_ENDS], cut


def test_recording_decodes_to_what_the_live_decoder_records_at_the_same_times():
    for cuts in ([], [5], [len(HEAD)], [len(HEAD) + 3, len(HEAD) + 40, len(RESPONSE) - 2], list(range(1, 200, 7))):
        reads = reads_of(RESPONSE, cuts)
        live, recorded = decoded_live(reads), decoded_from_recording(reads)
        assert (recorded.seqs, recorded.event_times, recorded.terminal, recorded.error) == \
            (live.seqs, live.event_times, live.terminal, live.error)


def test_a_recording_that_ends_before_the_last_chunk_is_a_failed_stream_with_what_came():
    cut = EVENT_ENDS[-1] - 5  # within the chunk of `done`
    result = decoded_from_recording([(1.0, RESPONSE[:cut])], lost="Connection reset by peer")
    assert result.seqs == [0, 1, 2] and result.terminal is None and not result.gap_free
    assert result.error == "connection closed before the end of the response: Connection reset by peer"


def test_a_recording_keeps_an_error_set_before_it_was_decoded():
    result = StreamResult(recording=Recording([(1.0, RESPONSE)]), error="still running after the 90 s time limit")
    decode_recording(result)
    assert result.seqs == [0, 1, 2, 3] and result.error == "still running after the 90 s time limit"
    assert result.recording is None


def test_a_refused_request_is_its_http_status():
    response = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    for decode in (decoded_live, decoded_from_recording):
        result = decode([(1.0, response)])
        assert result.status == 429 and result.error == "HTTP 429" and result.seqs == []


def test_recording_against_the_real_server_gives_the_live_mode_s_events(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1")
    body = {"prompt": "same answer", "max_tokens": 20}

    async def both() -> tuple[StreamResult, StreamResult]:
        return await asyncio.gather(run_stream(server.url, body), run_stream(server.url, body, record=True))

    live, recorded = asyncio.run(both())
    assert recorded.recording is not None and recorded.seqs == []  # nothing decoded while it ran
    decode_recording(recorded)
    assert live.gap_free and recorded.gap_free
    assert recorded.seqs == live.seqs == list(range(22))
    # each event at the time of its own read: after the start, in order, spread over the fake model's pauses
    times = recorded.event_times
    assert len(times) == 22 and recorded.first_event == times[0]
    assert recorded.started <= times[0] and times == sorted(times)
    assert times[-1] - times[0] >= 20 * 0.001


def test_a_live_stream_cancelled_after_its_first_event_keeps_it_without_an_error(gunicorn):
    """What bench/capacity.py does to hang up mid-stream: the events that came
    stay, and the hang-up is the caller's, not a failed exchange."""
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="50")

    async def hang_up_after_the_first_event() -> StreamResult:
        result = StreamResult()
        task = asyncio.create_task(run_stream(server.url, {"prompt": "x", "max_tokens": 50}, result))
        while not result.seqs and not task.done():
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # the transport's connection_lost, queued by the close before this wake-up: it runs first
        await asyncio.sleep(0)
        return result

    result = asyncio.run(hang_up_after_the_first_event())
    assert result.seqs[:1] == [0] and result.terminal is None
    assert result.error is None


def test_summarize_refuses_reads_not_yet_decoded():
    undecoded = StreamResult(recording=Recording([(1.0, RESPONSE)]))
    with pytest.raises(ValueError, match="decode_recording"):
        summarize([undecoded], 1.0, 0.0)
    assert summarize([decode_recording(undecoded)], 1.0, 0.0)["gap_free"] == 1
