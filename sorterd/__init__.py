"""The sorterd application: the command line, the daemon as wiring of the parts, the demo,
`top`, replay and its report. Each module's `__all__` is its public face."""

__all__: list[str] = []
