"""What the Redis log keeps in Redis: the keys, the stream entries and the Lua
scripts that change them.

Keys of one stream (the ``{stream_id}`` hash tag keeps them in one slot):

* ``sse-chat:{id}:events``: a Redis Stream, one entry per write of the stream (a
  write carries the events its producer appended during the writer's previous
  round trip: one at 20 tokens/s, many at full speed). An entry's fields are the
  events' ``seq`` (decimal) and encoded frames, in order, then ``t`` (empty) after
  the terminal event. Its id is ``0-(last seq + 1)``: ids grow with every write,
  so that Redis itself refuses a write that is not past the last one (a retry whose
  reply was lost), and a read after ``0-N`` returns every entry holding seq ``N``
  or later. The ``stream_lost`` entry, written by a reader's worker when the
  producer's lease expired, has id ``1-0``: past every id a producer writes, so
  that its late writes are refused. Entry ids never leave the event log; the
  public id stays ``{stream_id}:{seq}``.
* ``sse-chat:{id}:meta``: a hash: ``owner``, ``cancel``, ``readers``,
  ``unattended_since`` (Unix seconds), ``events_per_response`` (the most events
  a response carries, 0 for no bound). The last seq and whether the stream
  ended are the last entry's.
* ``sse-chat:{id}:lease``: exists while the producer lives. A reader's worker that
  finds it gone on an unfinished stream appends the terminal ``error`` event
  ``stream_lost``.

In a Redis Cluster the same keys are ``sse-chat:{sse-chat:N}:id:…``: the hash tag is
the stream's group ``N`` (:class:`Layout`), not its id.

One key per idempotency key (:meth:`.redis_streams.RedisEventLog.claim`), in a slot
of its own:

* ``sse-chat:{idem:OWNER:KEY}``: a string ``STREAM_ID FINGERPRINT`` with an expiry;
  ``OWNER`` is the caller's fingerprint (``-`` on an open service), ``KEY`` the
  digest of its ``Idempotency-Key``.

A producer's writes are plain commands (``XADD … NOMKSTREAM``, and now and then
``SET``/``PEXPIRE``/``HMGET``): no script per write; a stream is created by plain
commands in ``MULTI``/``EXEC``. Readers are attached, streams cancelled and
declared lost, and idempotency keys claimed by scripts. Each script touches only the keys
passed in ``KEYS``, all of one slot.
https://redis.io/docs/latest/develop/data-types/streams/,
https://redis.io/docs/latest/develop/interact/programmability/eval-intro/
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any, ClassVar

import redis
from redis.exceptions import NoScriptError

#: The field that follows a stream's terminal event in its last entry.
TERMINAL_FIELD = b"t"
#: The id of the ``stream_lost`` entry: past every ``0-N`` a producer writes.
LOST_ENTRY_ID = "1-0"

# KEYS: events, meta, lease. ARGV: the seq of the stream_lost event, its frame, TTL ms.
# Appends it only if the stream exists (-3), has not ended (-2), its lease is gone
# (-4) and its last event is the one before (-1); 1 when appended.
_DECLARE_LOST = """
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if not top then return -3 end
local fields = top[2]
local last = fields[#fields - 1]
if last == 't' then return -2 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -4 end
if tonumber(last) + 1 ~= tonumber(ARGV[1]) then return -1 end
redis.call('XADD', KEYS[1], '1-0', ARGV[1], ARGV[2], 't', '')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# Each of these changes a stream's meta hash only if it exists (HSET or HINCRBY on
# a missing key would create one that never expires); 0 means it does not.
_SET_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel', 1)
return 1
"""

_ATTACH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'readers', 1)
return 1
"""

_DETACH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local readers = redis.call('HINCRBY', KEYS[1], 'readers', -1)
if readers <= 0 then
  redis.call('HSET', KEYS[1], 'readers', 0, 'unattended_since', ARGV[1])
end
return 1
"""


# Idempotency claims, one key each. Its value is "STREAM_ID FINGERPRINT" (neither
# holds a space). KEYS: claim. ARGV: stream id, fingerprint, TTL ms. Returns the
# value held by another stream, or nil once this stream holds the key.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ' '
if held and string.sub(held, 1, #mine) ~= mine then return held end
redis.call('SET', KEYS[1], mine .. ARGV[2], 'PX', ARGV[3])
return false
"""

# KEYS: claim. ARGV: stream id. Deletes the claim only if that stream holds it.
_RELEASE = """
local held = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ' '
if held and string.sub(held, 1, #mine) == mine then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Scripts:
    """The Lua scripts, called by SHA; loaded again when Redis forgot them (a
    restart empties its script cache)."""

    _SOURCES: ClassVar[dict[str, str]] = {
        "lost": _DECLARE_LOST, "cancel": _SET_CANCEL, "attach": _ATTACH, "detach": _DETACH,
        "claim": _CLAIM, "release": _RELEASE}

    def __init__(self) -> None:
        #: The scripts' sources (what ``SCRIPT LOAD`` is given).
        self.sources = list(self._SOURCES.values())
        #: Each script's SHA1 (hex), by name: what ``EVALSHA`` is given.
        self.sha = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in self._SOURCES.items()}

    def call(self, client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA`` of script ``name`` with ``keys`` and ``args``; its reply as
        redis-py parses it. Loads every script first when Redis does not know it.

        Raises:
            redis.RedisError: as ``client.evalsha`` (an error reply, a connection
                failure).
        """
        try:
            return client.evalsha(self.sha[name], len(keys), *keys, *args)
        except NoScriptError:
            self.load(client)
            return client.evalsha(self.sha[name], len(keys), *keys, *args)

    def load(self, client: redis.Redis) -> None:
        """``SCRIPT LOAD`` every script (a restart empties Redis's script cache); a
        ``RedisCluster`` sends it to every primary.

        Raises:
            redis.RedisError: as ``client.script_load``.
        """
        for source in self._SOURCES.values():
            client.script_load(source)


class StreamKeys:
    """The Redis keys of one stream, all under one hash tag: ``{stream_id}`` on one
    Redis, the stream's group ``{sse-chat:N}`` in a Cluster (:class:`Layout`)."""

    __slots__ = ("stream_id", "tag", "events", "meta", "lease", "triple")

    def __init__(self, stream_id: str, group: int | None = None) -> None:
        self.stream_id = stream_id
        #: The hash tag: keys with the same tag are in the same Cluster slot.
        self.tag = stream_id if group is None else f"sse-chat:{group}"
        prefix = f"sse-chat:{{{stream_id}}}" if group is None else f"sse-chat:{{{self.tag}}}:{stream_id}"
        self.events = f"{prefix}:events"
        self.meta = f"{prefix}:meta"
        self.lease = f"{prefix}:lease"
        #: The keys of the lost script call, in its order (and what `delete` deletes).
        self.triple = [self.events, self.meta, self.lease]

    @staticmethod
    def stream_of(events_key: bytes) -> str:
        """The stream id inside an events key (``sse-chat:{ID}:events`` or
        ``sse-chat:{sse-chat:N}:ID:events``)."""
        text = events_key.decode()
        close = text.rindex("}")
        if text.endswith("}:events"):
            return text[text.index("{") + 1:close]
        return text[close + 2:-len(":events")]


class Layout:
    """How streams map to keys. On one Redis each stream has a hash tag of its own
    (``groups`` is ``None``). In a Cluster the streams fall into ``groups`` hash
    tags by a hash of their id (CRC-32 modulo ``groups``): keys of one tag share a
    slot, so that a worker reads every stream it follows in a group with one
    ``XREAD`` (Redis refuses a command across slots), however many there are;
    ``groups`` several times the number of primaries spreads them evenly."""

    def __init__(self, groups: int | None = None) -> None:
        if groups is not None and groups < 1:
            raise ValueError(f"groups must be at least 1, not {groups}")
        self.groups = groups

    def keys(self, stream_id: str) -> StreamKeys:
        """The keys of ``stream_id``."""
        if self.groups is None:
            return StreamKeys(stream_id)
        return StreamKeys(stream_id, zlib.crc32(stream_id.encode()) % self.groups)


def claim_key(owner: str | None, key: str) -> str:
    """The Redis key of ``owner``'s idempotency key ``key`` (a hex digest): the whole
    name is its hash tag, so each claim is one key in one slot."""
    return f"sse-chat:{{idem:{owner or '-'}:{key}}}"


def entry_id(last_seq: int) -> str:
    """The id of the entry whose last event is ``last_seq``."""
    return f"0-{last_seq + 1}"


def entry_fields(first_seq: int, frames: list[bytes], terminal: bool) -> list[Any]:
    """The fields of one entry holding events ``first_seq``, … (``frames``), as a
    flat list for ``XADD``."""
    fields: list[Any] = []
    for seq, frame in enumerate(frames, first_seq):
        fields += (seq, frame)
    if terminal:
        fields += (TERMINAL_FIELD, b"")
    return fields


def entry_events(fields: dict[bytes, bytes]) -> tuple[int, list[bytes], bool]:
    """What an entry holds, from its fields as redis-py gives them (a dict in their
    order): the seq of its first event, the frames, and whether the last is terminal."""
    frames = list(fields.values())
    terminal = TERMINAL_FIELD in fields
    if terminal:
        frames.pop()
    return int(next(iter(fields))), frames, terminal
