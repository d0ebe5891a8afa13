"""The sorterd application: command line, daemon wiring, demo."""
