"""A three-node NATS cluster with JetStream and MQTT on this machine: the reference
clustered broker of docs/cluster.md, for the tests, `sorterd demo` and benchmarks/.

Every node binds 127.0.0.1 on ports chosen when the cluster is made, and keeps them across
`restart`, so a client's list of URLs stays right. `stream_replicas: 3`: the MQTT sessions,
retained messages and QoS 1 messages live in JetStream streams replicated on all three nodes,
so a client whose node dies resumes its session on another. The first MQTT connection
creates those streams (a few seconds, after JetStream elected its leader): `start` returns
only once a QoS 1 message went from one node to another through them. `place_leaders`
moves the leadership of those streams and their consumers to one node, so that the death of
another node costs no JetStream election (docs/cluster.md "Where the leaders are"); it asks
with JetStream's step-down requests, through the official NATS client (nats-py).

Blocking calls (subprocesses; the MQTT probe and the NATS requests run an event loop of
their own in a thread of their own); asyncio code calls `start`/`restart`/`place_leaders`
through `asyncio.to_thread` when its loop must keep running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import aiomqtt
import nats
import nats.errors

from drivers.broker import free_port
from sorter.errors import SorterdError

__all__ = ["NatsCluster", "NatsClusterError", "nats_server_path"]

CLUSTER_NAME = "sorterd"
READY_TIMEOUT_S = 60.0
PLACE_TIMEOUT_S = 30.0
PLACE_POLL_S = 1.0
STEP_DOWN_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 5.0

_T = TypeVar("_T")


class NatsClusterError(SorterdError, RuntimeError):
    """The cluster could not be started (no nats-server, a node that exits, no MQTT)."""


def nats_server_path() -> str | None:
    for candidate in ("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    client_port: int
    route_port: int
    mqtt_port: int
    http_port: int  # monitoring: /healthz says whether its JetStream is current
    folder: Path


class NatsCluster:
    """`nodes` nats-servers in one cluster under `base_dir` (configs, JetStream stores,
    logs). A context manager: `with NatsCluster(folder) as cluster: cluster.mqtt_urls`."""

    def __init__(self, base_dir: Path, nodes: int = 3) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.base_dir = Path(base_dir)
        self._nodes = [
            _Node(
                f"n{i + 1}",
                free_port(),
                free_port(),
                free_port(),
                free_port(),
                self.base_dir / f"n{i + 1}",
            )
            for i in range(nodes)
        ]
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self._logs: list[IO[bytes] | None] = [None] * nodes

    # --- addresses --------------------------------------------------------------------------

    @property
    def mqtt_urls(self) -> list[str]:
        """One mqtt:// URL per node, in node order: the `[mqtt] url` list of a site."""
        return [f"mqtt://127.0.0.1:{n.mqtt_port}" for n in self._nodes]

    def mqtt_port(self, i: int) -> int:
        return self._nodes[i].mqtt_port

    def node_of_port(self, port: int) -> int | None:
        """Which node serves MQTT on `port` (to find the node a client is connected to)."""
        return next((i for i, n in enumerate(self._nodes) if n.mqtt_port == port), None)

    def running(self, i: int) -> bool:
        proc = self._procs[i]
        return proc is not None and proc.poll() is None

    def pid(self, i: int) -> int | None:
        proc = self._procs[i]
        return proc.pid if proc is not None and proc.poll() is None else None

    # --- life -------------------------------------------------------------------------------

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start every node not running (all of them the first time, or after `stop`);
        return once a QoS 1 message passed from the second node to the first."""
        if nats_server_path() is None:
            raise NatsClusterError("nats-server is not installed (Debian package nats-server)")
        try:
            for i in range(len(self._nodes)):
                if not self.running(i):
                    self._spawn(i)
            deadline = time.monotonic() + timeout_s
            for i in range(len(self._nodes)):
                self._wait_port(i, deadline)
            self._wait_mqtt_passes(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL); the stores stay on disk."""
        for i in range(len(self._nodes)):
            self._end(i, signal.SIGTERM)

    def kill(self, i: int) -> None:
        """SIGKILL node `i`: its clients' connections are reset at once."""
        self._end(i, signal.SIGKILL)

    def freeze(self, i: int) -> None:
        """SIGSTOP node `i`: its sockets stay open and answer nothing (half-open)."""
        self._signal(i, signal.SIGSTOP)

    def thaw(self, i: int) -> None:
        self._signal(i, signal.SIGCONT)

    def restart(self, i: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start node `i` again (killed or not) on its ports with its store; returns once it
        accepts MQTT connections, its JetStream has caught up (`/healthz`: only then may
        another node go without the cluster losing its quorum) and a QoS 1 message went
        from it to another node. That first MQTT connection sets up the node's MQTT state
        (it recreates its retained-messages consumer, a request to JetStream's metadata
        leader): done now, it does not fall on a client that moves here because another
        node died, maybe the metadata leader, whose election it would wait for."""
        self._end(i, signal.SIGKILL)
        self._spawn(i)
        deadline = time.monotonic() + timeout_s
        self._wait_port(i, deadline)
        self._wait_healthy(i, deadline)
        self._wait_mqtt_passes(deadline, via=i)

    def leaders(self) -> dict[str, str]:
        """The leader of every raft group of the MQTT streams, by node name, as the first
        running node's monitoring endpoint (`/jsz`) says: `"$MQTT_msgs"` for a stream,
        `"$MQTT_msgs > NAME"` for one of its consumers (a QoS 1 subscription); a group
        without a leader (an election under way) is left out."""
        up = [i for i in range(len(self._nodes)) if self.running(i)]
        if not up:
            return {}
        return _leaders_in(self._jsz(up[0]))

    def place_leaders(self, i: int, timeout_s: float = PLACE_TIMEOUT_S) -> dict[str, str]:
        """Move the leadership of every MQTT stream and consumer to node `i` (the node the
        lines' daemons list last, docs/cluster.md "Where the leaders are"), by asking each
        other leader to step down (JetStream's leader transfer, no election timeout);
        repeated, since nats-server 2.9 hands over to the first caught-up follower, not
        to a chosen one. Returns the groups still led elsewhere when `timeout_s` ran out
        (empty: all on node `i`), with the last refusal of a step-down, if any, under
        `"step-down"`."""
        target = self._nodes[i].name
        deadline = time.monotonic() + timeout_s
        elsewhere: dict[str, str] = {}
        refused = ""
        while True:
            with contextlib.suppress(NatsClusterError):  # /jsz slow to answer: ask again
                elsewhere = {g: n for g, n in self.leaders().items() if n != target}
                if not elsewhere:
                    return elsewhere
            if time.monotonic() > deadline:
                found = elsewhere or {"/jsz": "no answer"}
                return {**found, "step-down": refused} if refused else found
            try:
                # A refusal (a group electing, a leader that moved meanwhile) is asked
                # again on the next round, after /jsz said where the leaders are then.
                refusals = self.step_down(i, list(elsewhere))
            except NatsClusterError as exc:
                refusals = [str(exc)]
            refused = refusals[-1] if refusals else ""
            time.sleep(PLACE_POLL_S)

    def step_down(self, i: int, groups: Sequence[str]) -> list[str]:
        """Ask the leader of each group (named as `leaders` names them) to step down, with
        NATS requests through node `i`; returns one line per refusal (no leader to ask, a
        JetStream API error), empty when every one was accepted. NatsClusterError when
        node `i` cannot be reached."""
        return _step_down(self._nodes[i].client_port, groups)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until every running node accepts connections and a QoS 1 message passes
        (after the whole cluster was down: JetStream needs its leaders back)."""
        deadline = time.monotonic() + timeout_s
        for i in range(len(self._nodes)):
            if self.running(i):
                self._wait_port(i, deadline)
        self._wait_mqtt_passes(deadline)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- inside -----------------------------------------------------------------------------

    def _config(self, node: _Node) -> str:
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{n.route_port}"' for n in self._nodes if n is not node
        )
        store = node.folder / "jetstream"
        return f"""server_name: "{node.name}"
listen: "127.0.0.1:{node.client_port}"
http: "127.0.0.1:{node.http_port}"
jetstream {{
  store_dir: "{store}"
  max_memory_store: 256MB
  max_file_store: 2GB
}}
cluster {{
  name: "{CLUSTER_NAME}"
  listen: "127.0.0.1:{node.route_port}"
  routes: [{routes}]
}}
mqtt {{
  listen: "127.0.0.1:{node.mqtt_port}"
  stream_replicas: {min(3, len(self._nodes))}
}}
"""

    def _spawn(self, i: int) -> None:
        node = self._nodes[i]
        node.folder.mkdir(parents=True, exist_ok=True)
        config = node.folder / "nats.conf"
        config.write_text(self._config(node))
        server = nats_server_path()
        assert server is not None
        log = (node.folder / "nats.log").open("ab")
        self._logs[i] = log
        self._procs[i] = subprocess.Popen(
            [server, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _signal(self, i: int, sig: int) -> None:
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def _end(self, i: int, sig: int) -> None:
        proc, self._procs[i] = self._procs[i], None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen node cannot act on SIGTERM
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log, self._logs[i] = self._logs[i], None
        if log is not None:
            log.close()

    def _wait_port(self, i: int, deadline: float) -> None:
        node = self._nodes[i]
        while True:
            proc = self._procs[i]
            if proc is None or proc.poll() is not None:
                raise NatsClusterError(f"nats node {node.name} exited: {self._log_tail(i)}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=0.5),
            ):
                return
            if time.monotonic() > deadline:
                raise NatsClusterError(f"nats node {node.name}: no MQTT listener in time")
            time.sleep(0.05)

    def _jsz(self, i: int) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self._nodes[i].http_port}/jsz?acc=$G&streams=true&consumers=true"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                found = json.loads(answer.read())
        except (OSError, ValueError) as exc:
            raise NatsClusterError(f"nats node {self._nodes[i].name}: /jsz: {exc}") from exc
        return found if isinstance(found, dict) else {}

    def _wait_healthy(self, i: int, deadline: float) -> None:
        url = f"http://127.0.0.1:{self._nodes[i].http_port}/healthz"
        why = "no answer"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if json.loads(answer.read()).get("status") == "ok":
                        return
            except urllib.error.HTTPError as exc:  # 503 until JetStream is current
                with contextlib.suppress(OSError, ValueError):
                    why = str(json.loads(exc.read()).get("error", why))
            except (OSError, ValueError) as exc:
                why = str(exc)
            if time.monotonic() > deadline:
                raise NatsClusterError(f"nats node {self._nodes[i].name}: not healthy: {why}")
            time.sleep(0.1)

    def _wait_mqtt_passes(self, deadline: float, via: int | None = None) -> None:
        """A QoS 1 message from the second running node to the first (or from node `via`
        to another): JetStream is up and the MQTT streams exist (created, replicated, by
        the first connection)."""
        up = [i for i in range(len(self._nodes)) if self.running(i)]
        if not up:
            raise NatsClusterError("no nats node is running")
        sub_node, pub_node = up[0], up[1 % len(up)]
        if via is not None:
            others = [i for i in up if i != via]
            pub_node, sub_node = via, (others[0] if others else via)
        last_error = ""
        while time.monotonic() < deadline:
            try:
                if _message_passes(self.mqtt_port(sub_node), self.mqtt_port(pub_node)):
                    return
                last_error = "no message came through"
            except (OSError, _ProbeError) as exc:
                last_error = str(exc)
            time.sleep(0.5)
        raise NatsClusterError(f"the NATS cluster did not pass an MQTT message: {last_error}")

    def _log_tail(self, i: int, lines: int = 5) -> str:
        try:
            text = (self._nodes[i].folder / "nats.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])


def _leaders_in(jsz: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            name = str(stream.get("name", ""))
            if not name.startswith("$MQTT_"):
                continue
            if leader := (stream.get("cluster") or {}).get("leader"):
                found[name] = str(leader)
            for consumer in stream.get("consumer_detail") or []:
                if leader := (consumer.get("cluster") or {}).get("leader"):
                    found[f"{name} > {consumer.get('name', '')}"] = str(leader)
    return found


def _stepdown_subject(group: str) -> str:
    stream, _, consumer = group.partition(" > ")
    if consumer:
        return f"$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}"
    return f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}"


def _step_down(
    port: int, groups: Sequence[str], timeout_s: float = STEP_DOWN_TIMEOUT_S
) -> list[str]:
    """Ask the leader of each group (`_leaders_in`'s names) to step down, through node
    `port`'s NATS client port with the official client (nats-py), one request each; what
    went wrong with each group that was not accepted. NatsClusterError when the node
    cannot be reached at all."""
    return _run_apart(lambda: _step_down_async(port, groups, timeout_s), "natscluster-stepdown")


async def _step_down_async(port: int, groups: Sequence[str], timeout_s: float) -> list[str]:
    url = f"nats://127.0.0.1:{port}"
    seen: list[Exception] = []

    async def note(exc: Exception) -> None:  # raised below, not logged by the client
        seen.append(exc)

    try:
        # nats-py retries the first connection too (`max_reconnect_attempts` per server,
        # `reconnect_time_wait` apart), even without reconnecting: bounded here.
        async with asyncio.timeout(timeout_s):
            client = await nats.connect(
                url,
                connect_timeout=max(1, round(timeout_s)),
                allow_reconnect=False,  # one node asked: its failure is the caller's to see
                max_reconnect_attempts=1,
                error_cb=note,
            )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        why = _describe(seen[-1] if seen else exc)
        raise NatsClusterError(f"nats: cannot connect to {url}: {why}") from exc
    refused = []
    try:
        for group in groups:
            subject = _stepdown_subject(group)
            try:
                answer = await client.request(subject, b"", timeout=timeout_s)
            except nats.errors.NoRespondersError:
                refused.append(f"{group}: no JetStream answers {subject}")
            except (TimeoutError, nats.errors.Error) as exc:
                refused.append(f"{group}: {subject}: {_describe(exc)}")
            else:
                if why := _api_error(answer.data):
                    refused.append(f"{group}: {why}")
    finally:
        with contextlib.suppress(OSError, TimeoutError, nats.errors.Error):
            await client.close()
    return refused


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _api_error(data: bytes) -> str:
    """The error of a JetStream API answer (`{"error": {"code", "description"}}`), or ""
    when it says success."""
    try:
        answer = json.loads(data)
    except ValueError:
        return f"not a JetStream API answer: {data[:80]!r}"
    error = answer.get("error") if isinstance(answer, dict) else None
    if not error:
        return ""
    if isinstance(error, dict):
        return f"{error.get('description', error)} (code {error.get('code', '?')})"
    return str(error)


def _run_apart(main: Callable[[], Coroutine[Any, Any, _T]], name: str) -> _T:
    """`main()` in an event loop of its own, in a thread of its own, so that it works from
    blocking code and from a coroutine alike; what it raised is raised here."""
    result: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class _ProbeError(Exception):
    pass


def _message_passes(sub_port: int, pub_port: int, timeout_s: float = 5.0) -> bool:
    """Subscribe on one node, publish at QoS 1 on another; whether the message arrived."""
    try:
        return _run_apart(lambda: _probe(sub_port, pub_port, timeout_s), "natscluster-probe")
    except (aiomqtt.MqttError, TimeoutError) as exc:
        raise _ProbeError(_describe(exc)) from exc


async def _probe(sub_port: int, pub_port: int, timeout_s: float) -> bool:
    topic = f"natscluster-probe/{uuid.uuid4().hex}"
    async with asyncio.timeout(timeout_s * 3):
        async with (
            aiomqtt.Client("127.0.0.1", sub_port, identifier=f"probe-{uuid.uuid4().hex}") as sub,
            aiomqtt.Client("127.0.0.1", pub_port, identifier=f"probe-{uuid.uuid4().hex}") as pub,
        ):
            await sub.subscribe(topic, qos=1, timeout=timeout_s)
            await pub.publish(topic, b"probe", qos=1, timeout=timeout_s)
            try:
                async with asyncio.timeout(timeout_s):
                    async for message in sub.messages:
                        if str(message.topic) == topic:
                            return True
            except TimeoutError:
                return False
    return False
