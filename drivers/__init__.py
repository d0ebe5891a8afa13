"""All I/O of sorterd: scanners (serial/TCP), the PLC (Modbus), MQTT, brokers."""
