"""Hardware simulators speaking the real wire protocols: PLC and conveyor, scanners, traffic.

They share only records and configuration with the daemon (sorter.ports, sorter.config,
the preset records of sorter.telegram_options): their encoders are their own, so an
end-to-end test does not pass because both sides share a bug. Each module's `__all__`
is its face; `line.SimulatedLine` puts them together.
"""

__all__: list[str] = []
