"""The console's HTTP side (aiohttp): sign-in, pages, commands, search; the live stream is
sorterd/web/stream.py.

Every path but /login and /static/ needs a session: pages answer 303 to /login without
one, /api/ paths 401. Commands (`POST /api/chutes/N/ACTION`) also need the page's CSRF
token in X-CSRF-Token and the operator role (403 otherwise); they are carried to the line
as P/cmd/chute/N/ACTION and answered with its P/cmd-result (docs/interfaces.md section 10).
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from string import Template
from urllib.parse import quote

import structlog
from aiohttp import web

from sorter.commands import CHUTE_ACTIONS, MAX_CHUTE_DIGITS
from sorter.config import ArchiveSection
from sorterd.web.feed import BrokerAwayError, Changes, LineFeed
from sorterd.web.model import HubModel
from sorterd.web.search import MAX_CODE_CHARS, search
from sorterd.web.sessions import COOKIE_NAME, Session, SessionSigner, Throttle, password_stamp
from sorterd.web.users import Role, User, Users

__all__ = ["Console", "build_app"]

log = structlog.get_logger(__name__)

COMMAND_TIMEOUT_S = 5.0
VIEWS = {
    "/": "wall",
    "/charts": "charts",
    "/devices": "devices",
    "/decisions": "decisions",
    "/search": "search",
    "/hub": "hub",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static(name: str) -> bytes:
    return resources.files("sorterd.web").joinpath("static", name).read_bytes()


@dataclass(slots=True)
class Console:
    """What every handler shares."""

    site_name: str
    hub: HubModel
    feed: LineFeed
    changes: Changes
    users: Users
    signer: SessionSigner
    own_line: str
    secure_cookie: bool
    archive: ArchiveSection | None = None
    # A user name: 5 failures a minute. A client address: 20, since the tablets of a
    # floor may all come through one proxy.
    user_throttle: Throttle = field(default_factory=lambda: Throttle(5))
    address_throttle: Throttle = field(default_factory=lambda: Throttle(20))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def default_line(self) -> str:
        if self.own_line in self.hub.lines or not self.hub.lines:
            return self.own_line
        return sorted(self.hub.lines)[0]

    def line_of(self, request: web.Request) -> str:
        """The line a page asks for: one shown, or one a pattern may still discover (a
        page reconnecting to a restarted console asks before the line's status is in)."""
        wanted = request.query.get("line", "")
        return wanted if self.hub.may_show(wanted) else self.default_line()


KEY: web.AppKey[Console] = web.AppKey("console", Console)


def session_of(request: web.Request) -> tuple[Session, User] | None:
    console = request.app[KEY]
    session = console.signer.check(request.cookies.get(COOKIE_NAME))
    if session is None:
        return None
    user = console.users.get(session.user)
    if user is None or not hmac.compare_digest(session.stamp, password_stamp(user.password_hash)):
        return None  # removed, or a new password since this session began
    return session, user


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        response.headers.update(_SECURITY_HEADERS)
    return response


# --- sign-in ---------------------------------------------------------------------------------


def _login_page(
    console: Console, status: int, problem: str = "", username: str = ""
) -> web.Response:
    page = Template(_static("login.html").decode()).substitute(
        site=html.escape(console.site_name),
        problem=html.escape(problem),
        username=html.escape(username),
    )
    return web.Response(status=status, text=page, content_type="text/html")


async def login_form(request: web.Request) -> web.StreamResponse:
    return _login_page(request.app[KEY], 200)


async def login(request: web.Request) -> web.StreamResponse:
    console = request.app[KEY]
    form = await request.post()
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return _login_page(console, 401, "user and password, please")
    address = request.remote or "?"
    now_s = time.monotonic()
    wait_s = max(
        console.user_throttle.retry_after_s(username, now_s),
        console.address_throttle.retry_after_s(address, now_s),
    )
    if wait_s > 0:
        page = _login_page(console, 429, f"too many failed sign-ins: wait {wait_s:.0f} s", username)
        page.headers["Retry-After"] = str(max(1, round(wait_s)))
        return page
    # Counted as failed before the check and taken back when it succeeds: the check awaits,
    # and guesses sent all at once would otherwise all pass the throttle before the first
    # failure was counted.
    console.user_throttle.failed(username, now_s)
    console.address_throttle.failed(address, now_s)
    # argon2 takes tens of ms of CPU: off the loop, so the live pages stay live.
    user = await asyncio.to_thread(console.users.verify, username, password[:1024])
    if user is None:
        log.warning("sign-in refused", user=username[:64], remote=request.remote)
        return _login_page(console, 401, "wrong user or password", username)
    console.user_throttle.succeeded(username)
    console.address_throttle.forgive(address, now_s)
    value, _ = console.signer.issue(user.name, password_stamp(user.password_hash))
    response = _see_other("/")
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=int(console.signer.max_age_s),
        httponly=True,
        samesite="Strict",
        secure=console.secure_cookie,
        path="/",
    )
    log.info("signed in", user=user.name, role=user.role.value, remote=request.remote)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    found = session_of(request)
    form = await request.post()
    token = form.get("csrf")
    if found is not None and found[0].csrf_matches(token if isinstance(token, str) else None):
        request.app[KEY].signer.end(found[0])
        response = _see_other("/login")
        response.del_cookie(COOKIE_NAME, path="/")
        return response
    return web.json_response({"ok": False, "reason": "no session"}, status=401)


# --- pages -----------------------------------------------------------------------------------


async def page(request: web.Request) -> web.StreamResponse:
    found = session_of(request)
    if found is None:
        return _see_other("/login")
    session, user = found
    console = request.app[KEY]
    view = VIEWS[request.path]
    line = console.line_of(request)
    text = Template(_static("shell.html").decode()).substitute(
        csrf=html.escape(session.csrf),
        title=html.escape(view),
        view=view,
        line=html.escape(line),
        line_q=html.escape(quote(line, safe="")),
        role=user.role.value,
        user=html.escape(user.name),
    )
    response = web.Response(text=text, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :]
    if "/" in name or suffix not in _STATIC_TYPES or name.startswith(".") or "\0" in name:
        raise web.HTTPNotFound()
    try:
        body = _static(name)
    except (FileNotFoundError, IsADirectoryError):
        raise web.HTTPNotFound() from None
    response = web.Response(body=body, content_type=_STATIC_TYPES[suffix])
    response.headers["Cache-Control"] = "no-cache"
    return response


# --- API -------------------------------------------------------------------------------------


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _refused(status: int, reason: str) -> web.Response:
    return web.json_response({"ok": False, "reason": reason}, status=status)


async def chute_command(request: web.Request) -> web.StreamResponse:
    found = session_of(request)
    if found is None:
        return _refused(401, "sign in first")
    session, user = found
    if not session.csrf_matches(request.headers.get("X-CSRF-Token")):
        return _refused(403, "missing or wrong X-CSRF-Token")
    if user.role is not Role.OPERATOR:
        return _refused(403, f"{user.name} is a {user.role.value}: operators only")
    console = request.app[KEY]
    number, action = request.match_info["chute"], request.match_info["action"]
    if (
        not (number.isascii() and number.isdigit())
        or len(number) > MAX_CHUTE_DIGITS
        or action not in CHUTE_ACTIONS
    ):
        return _refused(404, "POST /api/chutes/N/disable|enable|full|emptied")
    wanted = request.query.get("line")
    if wanted is not None and wanted not in console.hub.lines:
        return _refused(404, f"no line {wanted[:100]!r}")
    line = wanted or console.default_line()
    try:
        answer = await console.feed.command(
            line, f"chute/{int(number)}/{action}", timeout_s=COMMAND_TIMEOUT_S
        )
    except BrokerAwayError as exc:
        return _refused(503, str(exc))
    except TimeoutError:
        return _refused(504, f"the line did not answer within {COMMAND_TIMEOUT_S:.0f} s")
    log.info("chute command", user=user.name, line=line, chute=int(number), action=action,
             ok=answer.get("ok"))  # fmt: skip
    return web.json_response(answer)


async def find(request: web.Request) -> web.StreamResponse:
    if session_of(request) is None:
        return _refused(401, "sign in first")
    console = request.app[KEY]
    code = request.query.get("code", "").strip()
    if not code or len(code) > MAX_CODE_CHARS or not code.isprintable():
        return _refused(400, f"a barcode or tracking id of 1-{MAX_CODE_CHARS} characters")
    found = await search(code, console.hub, console.feed, console.archive)
    return web.json_response(found, dumps=lambda o: json.dumps(o, default=str))


async def whoami(request: web.Request) -> web.StreamResponse:
    found = session_of(request)
    if found is None:
        return _refused(401, "sign in first")
    return web.json_response({"user": found[1].name, "role": found[1].role.value})


def build_app(console: Console) -> web.Application:
    from sorterd.web.stream import events  # noqa: PLC0415 - stream imports this module

    app = web.Application(middlewares=[_headers], client_max_size=64 * 1024)
    app[KEY] = console
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    for path in VIEWS:
        app.router.add_get(path, page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/search", find)
    app.router.add_get("/api/session", whoami)
    app.router.add_post("/api/chutes/{chute}/{action}", chute_command)

    async def on_shutdown(_: web.Application) -> None:
        console.stopping.set()
        console.changes.notify()

    app.on_shutdown.append(on_shutdown)
    return app
