"""Prometheus metrics: a line observer that counts, and a small HTTP server for /metrics.

`Metrics` implements `sorter.ports.LineObserver`: append it to `sorter.line.Line.observers`
and every decision, result and device change lands in its own `CollectorRegistry` (not the
process-global one, so tests and several instances in one process never clash). `start()`
serves the registry in a background thread on 127.0.0.1 by default; scrapes never touch
the event loop, and prometheus_client's metrics are thread-safe.

Label values are bounded: reasons and outcomes are the closed sets of `sorter.ports`
(anything else is counted as "other"); destinations come from the sort plan, which a reload
can change, so at most `max_destinations` distinct values are kept and the rest counted as
"other".
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app

from sorter import __version__
from sorter.ports import Outcome, Reason

__all__ = ["LATENCY_BUCKETS_S", "NO_DESTINATION", "OTHER", "Metrics"]

log = structlog.get_logger(__name__)

# Decision latency: request seen -> reply queued. A decision with its scan already there
# takes well under a millisecond; one that waits for its scan takes up to scan_wait_ms
# (200 ms by default, the timeout reason). Bounds in seconds, as Prometheus wants.
LATENCY_BUCKETS_S: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
)
OTHER: Final = "other"
NO_DESTINATION: Final = "none"
DEFAULT_MAX_DESTINATIONS: Final = 500
_POLL_INTERVAL_S: Final = 0.1  # how quickly stop() returns
_CLIENT_TIMEOUT_S: Final = 10.0  # a scraper that stalls does not hold a thread for ever


class Metrics:
    """Line metrics for Prometheus; a `LineObserver`. Quick, never raises on bad labels."""

    def __init__(self, max_destinations: int = DEFAULT_MAX_DESTINATIONS) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.max_destinations = max_destinations
        reg = self.registry
        self.decisions = Counter(
            "sorterd_decisions", "Sort decisions by reason.", ["reason"], registry=reg
        )
        self.decisions_by_destination = Counter(
            "sorterd_decisions_by_destination",
            f"Sort decisions by destination ('{NO_DESTINATION}' when none applies; "
            f"'{OTHER}' past {max_destinations} distinct destinations).",
            ["destination"],
            registry=reg,
        )
        self.results = Counter(
            "sorterd_results", "PLC confirmations by outcome.", ["outcome"], registry=reg
        )
        self.decision_latency = Histogram(
            "sorterd_decision_latency_seconds",
            "Time from the PLC's sort request to the host's reply being queued.",
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.device_connected = Gauge(
            "sorterd_device_connected", "1 when the device link is up.", ["device"], registry=reg
        )
        self.device_errors = Gauge(
            "sorterd_device_errors",
            "Errors counted on the device link since the daemon started.",
            ["device"],
            registry=reg,
        )
        Info("sorterd_build", "The running sorterd.", registry=reg).info({"version": __version__})

        # Children created up front: every reason and outcome shows as 0 from the first
        # scrape (rate() needs the zero), and the hot path is a dict lookup, not labels().
        self._reasons = {r.word: self.decisions.labels(r.word) for r in Reason}
        self._outcomes = {o.word: self.results.labels(o.word) for o in Outcome}
        self._destinations: dict[str, Counter] = {}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- LineObserver -----------------------------------------------------------------

    def on_decision(self, reason: str, destination: str, chute: int, latency_ms: float) -> None:
        counter = self._reasons.get(reason)
        if counter is None:
            counter = self._reasons[OTHER] = self.decisions.labels(OTHER)
        counter.inc()
        self._destination(destination).inc()
        self.decision_latency.observe(max(latency_ms, 0.0) / 1000)

    def on_result(self, outcome: str, chute_actual: int) -> None:
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[OTHER] = self.results.labels(OTHER)
        counter.inc()

    def on_device(self, name: str, connected: bool, errors: int) -> None:
        self.device_connected.labels(name).set(1 if connected else 0)
        self.device_errors.labels(name).set(errors)

    def _destination(self, destination: str) -> Counter:
        label = destination or NO_DESTINATION
        counter = self._destinations.get(label)
        if counter is None:
            if len(self._destinations) >= self.max_destinations:
                label = OTHER
                counter = self._destinations.get(label)
            if counter is None:
                counter = self._destinations[label] = self.decisions_by_destination.labels(label)
        return counter

    # --- /metrics over HTTP -------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) /metrics is served on, None when not started."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int | None:
        """The port /metrics is served on, None when not started."""
        return None if self._server is None else self._server.server_port

    def start(self, host: str = "127.0.0.1", port: int = 9464) -> int:
        """Serve /metrics (any path, as prometheus_client does) on host:port; return the port.

        Port 0 picks a free one. Binds loopback by default: expose it through a reverse
        proxy or set host deliberately. Synchronous and quick (bind + thread start); raises
        OSError when the address is in use, RuntimeError when already started.
        """
        if self._server is not None:
            raise RuntimeError(f"metrics server already running on port {self.port}")
        server_class = _server_class(host, port)
        server = make_server(
            host, port, make_wsgi_app(self.registry), server_class, handler_class=_QuietHandler
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name="metrics-http",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        log.info("metrics served", url=f"http://{_url_host(host)}:{server.server_port}/metrics")
        return server.server_port

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice or before `start()`.

        Blocks up to about 0.1 s (the server's poll interval): from the event loop, call it
        during shutdown or through `asyncio.to_thread`.
        """
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold up the process at exit
    block_on_close = False

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own name (socket.getfqdn): a reverse DNS
        # lookup that can hang start-up on a site network with broken DNS. Not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def _server_class(host: str, port: int) -> type[_ThreadingServer]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if infos and infos[0][0] == socket.AF_INET6:
        return _ThreadingServer6
    return _ThreadingServer


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape; a timeout for stalled clients."""

    timeout = _CLIENT_TIMEOUT_S

    def log_message(self, format: str, *args: object) -> None:
        pass
