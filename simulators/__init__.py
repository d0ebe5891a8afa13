"""Hardware simulators speaking the real wire protocols: PLC and conveyor, scanners, traffic."""
