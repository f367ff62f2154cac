"""What the Redis log keeps in Redis: the keys and the Lua scripts that change them.

Keys of one stream (the ``{stream_id}`` hash tag keeps them in one cluster slot):

* ``sse-chat:{id}:events``: a Redis Stream; event ``seq`` is entry ``0-(seq+1)``
  with fields ``f`` (the encoded frame) and ``t`` (``1`` for the terminal event).
  Entry ids never leave the event log; the public id stays ``{stream_id}:{seq}``.
* ``sse-chat:{id}:meta``: a hash: ``owner``, ``last_seq``, ``finished``, ``cancel``,
  ``readers``, ``unattended_since`` (Unix seconds), ``drop_every`` (events per
  response, 0 for none).
* ``sse-chat:{id}:lease``: exists while the producer lives. A reader's worker that
  finds it gone on an unfinished stream appends the terminal ``error`` event
  ``stream_lost``.

One key per idempotency key (:meth:`.redis_streams.RedisEventLog.claim`), in a slot
of its own:

* ``sse-chat:{idem:OWNER:KEY}``: a string ``STREAM_ID FINGERPRINT`` with an expiry;
  ``OWNER`` is the caller's fingerprint (``-`` on an open service), ``KEY`` the
  digest of its ``Idempotency-Key``.

Each script touches only the keys passed in ``KEYS``, all of one slot.
https://redis.io/docs/latest/develop/interact/programmability/eval-intro/
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import redis
from redis.exceptions import NoScriptError

# KEYS: events, meta, lease. ARGV: owner, frame, TTL ms, lease ms, now, drop_every (0: none).
# Idempotent: a stream that exists already (stream ids are random, so created by an
# earlier attempt of this very call whose reply was lost) is left as it is.
_CREATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'last_seq', 0, 'finished', 0, 'cancel', 0,
           'readers', 0, 'unattended_since', ARGV[5], 'drop_every', ARGV[6])
redis.call('XADD', KEYS[1], '0-1', 'f', ARGV[2], 't', 0)
redis.call('SET', KEYS[3], 1, 'PX', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: events, meta, lease. ARGV: first seq, 1 if the last frame is terminal, TTL in
# ms, MAXLEN, 1 to append only when the lease is gone, lease in ms (0: do not renew
# lease and expiry), then the frames in order. Idempotent: frames already stored (a
# retry after a connection cut mid-reply) are skipped.
# Returns a negative status, or the producer's control fields (cancel, readers,
# unattended_since), so that a busy producer learns them without asking.
_APPEND = """
local events, meta, lease = KEYS[1], KEYS[2], KEYS[3]
local first, terminal, ttl_ms, maxlen = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local only_if_lost, lease_ms = ARGV[5], tonumber(ARGV[6])
local state = redis.call('HMGET', meta, 'last_seq', 'finished', 'cancel', 'readers', 'unattended_since')
if not state[1] then return -3 end
local control = {state[3], state[4], state[5]}
local last = tonumber(state[1])
local count = #ARGV - 6
if state[2] == '1' then
  -- Ended. Only the retry of our own terminal batch (its reply was lost) succeeds.
  if terminal == '1' and first + count - 1 == last and only_if_lost ~= '1' then
    local stored = redis.call('XRANGE', events, '0-' .. (last + 1), '0-' .. (last + 1))
    if stored[1] and stored[1][2][2] == ARGV[6 + count] then return control end
  end
  return -2
end
if first + count - 1 <= last and only_if_lost ~= '1' then return control end  -- a retry: all stored
if only_if_lost == '1' and redis.call('EXISTS', lease) == 1 then return -4 end
if first > last + 1 then return -1 end
for i = last - first + 2, count do
  local seq = first + i - 1
  local flag = (i == count and terminal == '1') and '1' or '0'
  redis.call('XADD', events, 'MAXLEN', maxlen, '0-' .. (seq + 1), 'f', ARGV[6 + i], 't', flag)
end
redis.call('HSET', meta, 'last_seq', first + count - 1)
if terminal == '1' then
  redis.call('HSET', meta, 'finished', '1')
  redis.call('PEXPIRE', events, ttl_ms)
  redis.call('PEXPIRE', meta, ttl_ms)
  redis.call('DEL', lease)
elseif lease_ms > 0 then
  redis.call('SET', lease, 1, 'PX', lease_ms)  -- a producer that writes is alive
  redis.call('PEXPIRE', events, ttl_ms)
  redis.call('PEXPIRE', meta, ttl_ms)
end
return control
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
        "create": _CREATE, "append": _APPEND, "cancel": _SET_CANCEL, "attach": _ATTACH, "detach": _DETACH,
        "claim": _CLAIM, "release": _RELEASE}

    def __init__(self) -> None:
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
        """``SCRIPT LOAD`` every script (a restart empties Redis's script cache).

        Raises:
            redis.RedisError: as ``client.script_load``.
        """
        for source in self._SOURCES.values():
            client.script_load(source)


class StreamKeys:
    """The Redis keys of one stream, all under its hash tag ``{stream_id}``."""

    __slots__ = ("stream_id", "events", "meta", "lease", "triple")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        prefix = f"sse-chat:{{{stream_id}}}"
        self.events = f"{prefix}:events"
        self.meta = f"{prefix}:meta"
        self.lease = f"{prefix}:lease"
        #: The keys of an append script call, in its order.
        self.triple = [self.events, self.meta, self.lease]

    @staticmethod
    def stream_of(events_key: bytes) -> str:
        """The stream id inside an events key (``sse-chat:{ID}:events``)."""
        text = events_key.decode()
        return text[text.index("{") + 1:text.rindex("}")]


def claim_key(owner: str | None, key: str) -> str:
    """The Redis key of ``owner``'s idempotency key ``key`` (a hex digest): the whole
    name is its hash tag, so each claim is one key in one slot."""
    return f"sse-chat:{{idem:{owner or '-'}:{key}}}"
