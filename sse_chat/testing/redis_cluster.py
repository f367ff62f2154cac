"""A real Redis Cluster on loopback ports, for tests: Debian's ``redis-server`` in
cluster mode, 3 primaries with 1 replica each, joined by ``redis-cli --cluster
create``. https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/
"""

from __future__ import annotations

import functools
import signal
import socket
import subprocess
from pathlib import Path

import redis

from sse_chat.testing.servers import free_port, require_binary, wait_until

#: A node's cluster bus listens on its port + this.
BUS_OFFSET = 10_000
#: Milliseconds without an answer after which a node is taken for failed (the
#: replicas' election starts then); short, so that a failover test is quick.
NODE_TIMEOUT_MS = 2000


def _bus_free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port


class RedisCluster:
    """``primaries`` primaries with ``replicas`` replicas each, on free loopback
    ports, each node keeping its files in a directory under ``directory``.
    :attr:`url` names one node (any node will do for a client).

    Raises:
        AssertionError: a node did not start, or the cluster did not become ``ok``
            within 30 s.
    """

    def __init__(self, directory: Path, primaries: int = 3, replicas: int = 1) -> None:
        server = require_binary("redis-server")
        self.ports = [_bus_free_port() for _ in range(primaries * (1 + replicas))]
        self.processes: dict[int, subprocess.Popen] = {}
        for port in self.ports:
            node_dir = directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            self.processes[port] = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                 "--save", "", "--appendonly", "no", "--dir", str(node_dir), "--logfile", "redis.log"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for port in self.ports:
                wait_until(functools.partial(self._pings, port), 10, f"redis-server on {port}")
            subprocess.run([require_binary("redis-cli"), "--cluster", "create",
                            *(f"127.0.0.1:{port}" for port in self.ports), "--cluster-replicas", str(replicas),
                            "--cluster-yes"], check=True, capture_output=True, timeout=30)
            wait_until(self.is_ok, 30, "the cluster to be ok on every node")
            wait_until(lambda: self._roles() == {"master": primaries, "slave": primaries * replicas}, 30,
                       "every replica to follow its primary")
        except BaseException:
            self.stop()
            raise
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"

    def _pings(self, port: int) -> bool:
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _info(self, port: int) -> dict:
        with redis.Redis(port=port, socket_timeout=1) as client:
            return client.info("cluster") | dict(
                line.split(":", 1) for line in client.execute_command("CLUSTER", "INFO").decode().split("\r\n")
                if ":" in line)

    def is_ok(self) -> bool:
        """Every running node says ``cluster_state:ok`` and knows every slot."""
        try:
            infos = [self._info(port) for port, process in self.processes.items() if process.poll() is None]
        except redis.RedisError:
            return False
        return all(info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384
                   for info in infos)

    def _roles(self) -> dict[str, int]:
        roles: dict[str, int] = {}
        try:
            for port, process in self.processes.items():
                if process.poll() is None:
                    with redis.Redis(port=port, socket_timeout=1) as client:
                        info = client.info("replication")
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        continue
                    roles[info["role"]] = roles.get(info["role"], 0) + 1
        except redis.RedisError:
            return {}
        return roles

    def primary_of(self, key: str) -> int:
        """The port of the primary that holds ``key``'s slot now."""
        for port, process in self.processes.items():
            if process.poll() is not None:
                continue
            with redis.Redis(port=port, socket_timeout=1) as client:
                slot = client.execute_command("CLUSTER", "KEYSLOT", key)
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return int(primary[1])
        raise AssertionError("no running node answers")

    def replicas_of(self, port: int) -> list[int]:
        """The ports of the replicas of the primary on ``port``."""
        with redis.Redis(port=port, socket_timeout=1) as client:
            myself = client.execute_command("CLUSTER", "MYID").decode()
            lines = client.execute_command("CLUSTER", "REPLICAS", myself)
        return [int(line.decode().split()[1].split("@")[0].rsplit(":", 1)[1]) for line in lines]

    def pause(self, port: int) -> None:
        """SIGSTOP the node on ``port``: it neither answers nor replicates until :meth:`resume`."""
        self.processes[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        """SIGCONT the node on ``port``."""
        self.processes[port].send_signal(signal.SIGCONT)

    def cut_replication(self, port: int) -> None:
        """Have the primary on ``port`` close its replicas' connections (``CLIENT
        KILL TYPE replica``): a paused replica then misses every later write."""
        with redis.Redis(port=port, socket_timeout=1) as client:
            client.execute_command("CLIENT", "KILL", "TYPE", "replica")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (no save, no goodbye)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        """SIGKILL every node (their data is not needed again) and wait for them."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
        for process in self.processes.values():
            process.wait(10)
