"""Which Redis server holds a key: one Redis, or the primaries of a Redis Cluster.

The Redis log's writer and fan-in send their own pipelined round trips
(:class:`RoundTrips`), so they need to know, for each key, the server to send it
to, and what to do when a Cluster's slots move. Everything else sends short
commands through :attr:`Nodes.client` (a ``redis.Redis``, or redis-py's
``RedisCluster``, which routes each single-slot command or pipeline and follows
``MOVED``/``ASK``).

https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MovedError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

log = logging.getLogger(__name__)

#: Errors that mean "not now": the server or the Cluster cannot serve the command
#: at this moment (down, electing a new primary, moving a slot); a later attempt
#: may succeed.
UNREACHABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, ClusterDownError, ClusterError, MasterDownError, TryAgainError,
    SlotNotCoveredError)
#: Error replies that say the Cluster's slots are elsewhere now.
_MOVED = (MovedError, AskError, ClusterDownError, TryAgainError, MasterDownError)


class TopologyChanged(redis.ConnectionError):
    """A reply said the key's slot is served elsewhere now (``MOVED``, ``ASK``,
    ``CLUSTERDOWN``, ``TRYAGAIN``): the slot map was read again; try again."""


class Nodes:
    """One Redis server: every key is on it.

    Args:
        client: a ``redis.Redis`` (bytes replies).
    """

    cluster = False

    def __init__(self, client: redis.Redis) -> None:
        self.client: Any = client

    def node_for(self, key: str) -> tuple[str, redis.Redis]:
        """The name (``host:port``) and client of the server that holds ``key``."""
        return "single", self.client

    def primaries(self) -> list[tuple[str, redis.Redis]]:
        """Every server that holds keys: its name and client."""
        return [("single", self.client)]

    def refresh(self) -> None:
        """Read the slot map again (nothing to read for one server)."""

    def ready(self) -> bool:
        """True when every primary answers ``PING``; never raises."""
        try:
            return all(client.ping() for _, client in self.primaries())
        except (redis.RedisError, OSError):
            return False


class ClusterNodes(Nodes):
    """The primaries of a Redis Cluster, as redis-py's ``RedisCluster`` knows them.

    Args:
        cluster: a ``RedisCluster`` (bytes replies), or a :class:`LazyCluster`.
    """

    cluster = True

    def __init__(self, cluster: RedisCluster | LazyCluster) -> None:
        super().__init__(cluster)  # type: ignore[arg-type]
        self._cluster: Any = cluster

    def node_for(self, key: str) -> tuple[str, redis.Redis]:
        node = self._cluster.get_node_from_key(key)
        return node.name, self._cluster.get_redis_connection(node)

    def primaries(self) -> list[tuple[str, redis.Redis]]:
        return [(node.name, self._cluster.get_redis_connection(node)) for node in self._cluster.get_primaries()]

    def refresh(self) -> None:
        try:
            self._cluster.nodes_manager.initialize()
        except UNREACHABLE as exc:  # the Cluster is still electing; the next failure tries again
            log.debug("could not read the Redis Cluster's slots again: %s", exc)


class LazyCluster:
    """A ``RedisCluster`` made by ``factory`` at its first use, and again at each
    use until it could be made: it reads the slot map when made, which no node of
    a Cluster that is down can give, and a worker must start all the same.
    Attributes are the ``RedisCluster``'s.

    Raises (from any attribute, while it cannot be made):
        redis.ConnectionError: no node answers.
    """

    def __init__(self, factory: Callable[[], RedisCluster]) -> None:
        self._factory = factory
        self._cluster: RedisCluster | None = None
        self._lock = threading.Lock()

    def get(self) -> RedisCluster:
        """The ``RedisCluster``, made now if it was not yet."""
        if self._cluster is None:
            with self._lock:
                if self._cluster is None:
                    try:
                        self._cluster = self._factory()
                    except RedisClusterException as exc:
                        raise redis.ConnectionError(f"no node of the Redis Cluster answers: {exc}") from exc
        return self._cluster

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


def connect(url: str, *, max_connections: int, pool_timeout_s: float, connect_timeout_s: float) -> Nodes:
    """The :class:`Nodes` behind ``url`` (``redis://host:port/db``, ``rediss://``,
    ``unix://``). A Cluster is recognised by ``INFO cluster`` (``cluster_enabled:1``)
    when the server answers now, or by ``cluster=yes`` in the URL's query (needed
    when the Cluster may be down while the service starts); ``cluster=no`` forces
    one Redis. A server that does not answer now is taken for one Redis, and the
    client connects lazily, as before; a Cluster's client reads the slot map at its
    first use (:class:`LazyCluster`).

    Raises:
        ValueError: ``cluster=`` is neither ``yes`` nor ``no``.
    """
    url, cluster = _cluster_option(url)
    if cluster is None:
        cluster = _is_cluster(url, connect_timeout_s)
    if cluster:
        return ClusterNodes(LazyCluster(lambda: RedisCluster.from_url(
            url, max_connections=max_connections, socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 1))))
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout_s, socket_connect_timeout=connect_timeout_s,
        health_check_interval=30)
    # One quick retry: a pooled connection that Redis closed (restart) reconnects.
    return Nodes(redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 1)))


def _cluster_option(url: str) -> tuple[str, bool | None]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    values = [value for name, value in query if name == "cluster"]
    if not values:
        return url, None
    if values[-1] not in ("yes", "no"):
        raise ValueError(f"cluster={values[-1]!r} in the Redis URL: use cluster=yes or cluster=no")
    rest = urlencode([(name, value) for name, value in query if name != "cluster"])
    return urlunsplit(parts._replace(query=rest)), values[-1] == "yes"


def _is_cluster(url: str, connect_timeout_s: float) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=connect_timeout_s, socket_timeout=connect_timeout_s,
                                  retry=Retry(NoBackoff(), 0)) as client:
            return bool(client.info("cluster").get("cluster_enabled"))
    except (redis.RedisError, OSError) as exc:
        log.warning("Redis at %s does not answer (%s): taken for one Redis, not a Cluster "
                    "(add cluster=yes to the URL's query for a Cluster)", url, exc)
        return False


class RoundTrips:
    """Pipelined round trips of raw commands on connections of their own, one per
    server: the commands for each server are packed and sent to all of them
    first, then every reply is read, so one round trip costs the slowest server's
    time, not the sum. Not thread-safe: one user (the writer, the fan-in).

    Args:
        nodes: where each key lives.
    """

    def __init__(self, nodes: Nodes) -> None:
        self._nodes = nodes
        self._connections: dict[str, Any] = {}

    def send(self, commands: list[tuple[Any, ...]], keys: list[str]) -> list[Any]:
        """Send ``commands[i]`` to the server holding ``keys[i]``; return the replies
        in order (an error reply as its ``redis.ResponseError``, unparsed otherwise).

        Raises:
            redis.ConnectionError, redis.TimeoutError: a server cannot be reached.
            TopologyChanged: a reply said a slot moved (the slot map was read again;
                the replies of this round trip are lost, so send its commands again).
        """
        groups: dict[str, tuple[redis.Redis, list[int]]] = {}
        for index, key in enumerate(keys):
            name, client = self._nodes.node_for(key)
            groups.setdefault(name, (client, []))[1].append(index)
        used = []
        try:
            for name, (client, indexes) in groups.items():
                connection = self._connection(name, client)
                used.append(connection)
                connection.send_packed_command([b"".join(hiredis.pack_command(commands[i]) for i in indexes)],
                                               check_health=False)
            results: list[Any] = [None] * len(commands)
            for connection, (_, indexes) in zip(used, groups.values(), strict=True):
                for index in indexes:
                    try:
                        results[index] = connection.read_response()
                    except redis.ResponseError as error:
                        results[index] = error
        except BaseException:
            for connection in used:
                connection.disconnect()  # a half-read reply must not be read by the next call
            if self._nodes.cluster:
                self._nodes.refresh()  # a primary may be gone: its replica may serve its slots soon
            raise
        moved = next((result for result in results if isinstance(result, _MOVED)), None)
        if moved is not None:
            self._nodes.refresh()
            self.close()
            raise TopologyChanged(f"the Redis Cluster moved a slot ({moved})")
        return results

    def node_of(self, key: str) -> str:
        """The name of the server that holds ``key`` now."""
        return self._nodes.node_for(key)[0]

    def _connection(self, name: str, client: redis.Redis) -> Any:
        connection = self._connections.get(name)
        if connection is None:
            connection = self._connections[name] = client.connection_pool.get_connection()
        return connection

    def close(self) -> None:
        """Give every connection back, closed (after a failure or a topology change)."""
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            connection.disconnect()

    @property
    def connections(self) -> dict[str, Any]:
        """The open connections, by server name (tests look at them)."""
        return self._connections
