"""`sorterd web -c SITE.toml`: the console as its own process, and `--add-user`.

The console never runs in the daemon's event loop: it is a separate process that reads the
lines from MQTT as `sorterd top` does and sends commands on P/cmd like any other client.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
from aiohttp import web

from sorter.config import ConfigError, Problem, Site
from sorterd.web.app import Console, build_app
from sorterd.web.feed import Changes, LineFeed
from sorterd.web.model import HubModel
from sorterd.web.sessions import SessionSigner
from sorterd.web.settings import session_key, web_section, web_settings
from sorterd.web.users import Role, Users, add_user, check_name, read_password

__all__ = ["add_user_command", "run_web"]

log = structlog.get_logger(__name__)

# How long a stop waits for requests in flight (the live streams end at once).
SHUTDOWN_TIMEOUT_S = 3.0


async def run_web(site: Site, stop: asyncio.Event, started: asyncio.Event | None = None) -> int:
    """Serve until `stop` is set; 0 then. A busy port is an OSError (exit 1, one line)."""
    settings = web_settings(site)
    hub = HubModel(settings.lines)
    changes = Changes()
    feed = LineFeed(site.config.mqtt, hub, changes)
    console = Console(
        site_name=f"{site.config.site.name} / {site.config.site.line}",
        hub=hub,
        feed=feed,
        changes=changes,
        users=Users(settings.users_path),
        signer=SessionSigner(
            session_key(settings.session_key_path), settings.section.session_hours * 3600
        ),
        own_line=settings.own_line,
        secure_cookie=settings.tls,
        archive=site.config.archive,
    )
    runner = web.AppRunner(
        build_app(console),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        tcp = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            ssl_context=settings.ssl_context(),
        )
        await tcp.start()
        scheme = "https" if settings.tls else "http"
        log.info("web console listening", url=f"{scheme}://{settings.section.listen}/",
                 lines=list(settings.lines))  # fmt: skip
        async with asyncio.TaskGroup() as tg:
            follower = tg.create_task(feed.run(), name="web-mqtt")
            if started is not None:
                started.set()
            await stop.wait()
            follower.cancel()
    finally:
        await runner.cleanup()
    return 0


def install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def add_user_command(site: Site, name: str, role: str, stdin_text: str | None = None) -> int:
    """`--add-user NAME --role ROLE`, the password from standard input; 0 once written."""
    section = web_section(site)
    path = site.path.resolve().parent / section.users
    check_name(name)  # before asking for a password
    if stdin_text is None:
        if sys.stdin.isatty():
            print("password (one line): ", end="", file=sys.stderr, flush=True)
        stdin_text = sys.stdin.readline()
    password = read_password(stdin_text)
    if not path.parent.is_dir():
        raise ConfigError([Problem(str(site.path), "web.users", f"no folder {path.parent}")])
    new = add_user(path, name, Role(role), password)
    print(f"{'added' if new else 'updated'} {role} {name} in {path}")
    return 0
