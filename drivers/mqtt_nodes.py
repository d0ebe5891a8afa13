"""The nodes of one MQTT broker, and which one a client connects to next (docs/cluster.md).

`[mqtt] url` is one URL or the list of the nodes of one clustered broker. Every MQTT client
of the project (the daemon's publisher, the feeds subscriber, `sorterd archive`, `sorterd
top`) opens its connections through `MqttNodes`: it connects to the current node and, when
the attempt fails or the connection ends, calls `failed()` and waits its backoff
(sorter/backoff.py) before the next attempt, on the next node of the list. So a node that
is down at start-up costs one failed attempt, and a node that dies under a connected client
costs one backoff step (about 0.1 s) before the client is on the next node. With one URL
this is the reconnect every client always had.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from sorter.addresses import MqttEndpoint, parse_mqtt_urls

if TYPE_CHECKING:
    from sorter.config import MqttSection

__all__ = ["MqttNodes"]

log = structlog.get_logger(__name__)


class MqttNodes:
    """One broker's nodes, parsed by `sorter.addresses.parse_mqtt_urls` (as check-config
    parses them). `username`/`password` win over a URL's own; TLS files apply to every
    node (one cluster, one CA)."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.endpoints: tuple[MqttEndpoint, ...] = parse_mqtt_urls(url)
        self._username = username
        self._password = password
        self._tls_files = (ca_file, cert_file, key_file)
        self._index = 0

    @classmethod
    def of(cls, mqtt: MqttSection) -> MqttNodes:
        """The nodes of a site's [mqtt] table, with its credentials and TLS files."""
        return cls(
            mqtt.url,
            username=mqtt.username,
            password=mqtt.password,
            ca_file=mqtt.ca_file,
            cert_file=mqtt.cert_file,
            key_file=mqtt.key_file,
        )

    @property
    def current(self) -> MqttEndpoint:
        """The node the next connection goes to (or the one connected to)."""
        return self.endpoints[self._index]

    @property
    def index(self) -> int:
        return self._index

    @property
    def shown(self) -> str:
        """The current node as logs show it (scheme://host:port, never a password)."""
        return self.current.shown

    @property
    def tls(self) -> bool:
        return self.current.tls

    @property
    def username(self) -> str | None:
        return self._username if self._username is not None else self.current.username

    @property
    def password(self) -> str | None:
        return self._password if self._password is not None else self.current.password

    def failed(self, reason: str = "") -> None:
        """The current node could not be reached, or its connection ended: the next
        attempt goes to the next node (the same one when there is only one)."""
        if len(self.endpoints) > 1:
            before = self.current.shown
            self._index = (self._index + 1) % len(self.endpoints)
            log.info("mqtt next node", failed=before, next=self.current.shown, reason=reason)

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ca_file, cert_file, key_file = self._tls_files
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
        return context

    def client(self, **options: Any) -> aiomqtt.Client:
        """An aiomqtt client for the current node; `options` are aiomqtt.Client's other
        keyword arguments (identifier, clean_session, will, keepalive...)."""
        node = self.current
        return aiomqtt.Client(
            node.host,
            node.port,
            username=self.username,
            password=self.password,
            tls_context=self.tls_context(),
            **options,
        )
