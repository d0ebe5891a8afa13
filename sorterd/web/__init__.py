"""The web console, `sorterd web` (docs/web.md, docs/interfaces.md section 10): a process
of its own that reads the lines from MQTT and serves the chute wall, throughput, devices,
decisions, search and the hub to a browser; operators command chutes through P/cmd."""

from sorterd.web.server import add_user_command, run_web
from sorterd.web.settings import web_problems

__all__ = ["add_user_command", "run_web", "web_problems"]
