"""All I/O of sorterd: scanners (serial/TCP), the PLC (Modbus), MQTT, the journal, metrics,
brokers. Each module's `__all__` is its public face; what they exchange with the line core
is in `sorter.ports`."""

__all__: list[str] = []
