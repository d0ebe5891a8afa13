"""`[web]` resolved for the console: its files found against the config's folder and checked.

check-config and `sorterd web` call the same `web_settings`, so a config check-config
accepts starts: the listen address, the users file (there and parsing), the certificate
and key (a pair that loads), the session key file (readable, or a folder to create it in).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from sorter.config import ConfigError, Problem, Site, WebSection
from sorterd.web.users import load_users

__all__ = [
    "SESSION_KEY_BYTES",
    "WebSettings",
    "session_key",
    "users_of",
    "web_problems",
    "web_section",
    "web_settings",
]

SESSION_KEY_BYTES = 32


class EncryptedKeyError(ValueError):
    """The TLS key wants a pass phrase: OpenSSL would ask for it on the terminal (check-config
    waited for it there), or fail without one (a service)."""


def _no_pass_phrase() -> bytes:
    raise EncryptedKeyError(
        "the key is encrypted: give the console an unencrypted key, readable by its user "
        "only (openssl pkey -in KEY -out web.key; chmod 600 web.key)"
    )


@dataclass(frozen=True, slots=True)
class WebSettings:
    section: WebSection
    host: str
    port: int
    users_path: Path
    cert_path: Path | None
    key_path: Path | None
    session_key_path: Path
    lines: tuple[str, ...]  # prefixes; a + level means discovered from retained P/status
    own_line: str  # the site's mqtt.topic_prefix

    @property
    def tls(self) -> bool:
        return self.cert_path is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.cert_path is None or self.key_path is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path, password=_no_pass_phrase)
        return context


def web_section(site: Site) -> WebSection:
    section = site.config.web
    if section is None:
        raise ConfigError(
            [
                Problem(
                    str(site.path),
                    "web",
                    'no [web] table: add one, e.g. [web] users = "users.toml" (docs/web.md)',
                )
            ]
        )
    return section


def _resolve(site: Site, section: WebSection) -> WebSettings:
    base = site.path.resolve().parent
    host, _, port = section.listen.rpartition(":")
    own = site.config.mqtt.topic_prefix
    return WebSettings(
        section=section,
        host=host.strip("[]"),  # [::1]:8080
        port=int(port),
        users_path=base / section.users,
        cert_path=None if section.cert_file is None else base / section.cert_file,
        key_path=None if section.key_file is None else base / section.key_file,
        session_key_path=base / section.session_key_file,
        lines=tuple(section.lines) or (own,),
        own_line=own,
    )


def _tls_problems(shown: str, settings: WebSettings) -> list[Problem]:
    cert, key = settings.cert_path, settings.key_path
    if cert is None and key is None:
        return []
    if cert is None or key is None:
        missing = "web.cert_file" if cert is None else "web.key_file"
        return [Problem(shown, missing, "TLS needs both web.cert_file and web.key_file")]
    problems = [
        Problem(shown, f"web.{name}", f"no such file: {path}")
        for name, path in (("cert_file", cert), ("key_file", key))
        if not path.is_file()
    ]
    if problems:
        return problems
    try:
        settings.ssl_context()
    except EncryptedKeyError as exc:
        return [Problem(shown, "web.key_file", f"{key.name}: {exc}")]
    except (ssl.SSLError, OSError) as exc:
        return [
            Problem(
                shown,
                "web.cert_file",
                f"certificate {cert.name} and key {key.name} do not load as a pair: "
                f"{getattr(exc, 'reason', None) or exc}",
            )
        ]
    return []


def _listen_problems(shown: str, settings: WebSettings) -> list[Problem]:
    """The listen host must name an address of this machine: one that is not (a typo, the
    address of another box) passed check-config and failed at start with errno 99. Bound
    on port 0, so a console already running on the port does not count as a problem."""
    host = settings.host
    if not host:
        return [Problem(shown, "web.listen", "no host: give one, e.g. 127.0.0.1:8080")]
    try:
        found = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return [Problem(shown, "web.listen", f"host {host!r} does not resolve: {exc}")]
    for family, kind, proto, _, address in found:
        with contextlib.suppress(OSError), socket.socket(family, kind, proto) as probe:
            probe.bind((address[0], 0, *address[2:]))
            return []
    return [Problem(shown, "web.listen", f"{host} is no address of this machine")]


def _key_problems(shown: str, path: Path) -> list[Problem]:
    if path.exists():
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return [Problem(shown, "web.session_key_file", f"cannot read {path}: {exc}")]
        if len(text) < SESSION_KEY_BYTES:
            return [
                Problem(
                    shown,
                    "web.session_key_file",
                    f"{path} holds a key of {len(text)} characters; at least "
                    f"{SESSION_KEY_BYTES} (delete it and the console writes a new one)",
                )
            ]
        return []
    if not os.access(path.parent, os.W_OK):
        return [
            Problem(
                shown,
                "web.session_key_file",
                f"{path} does not exist and its folder is not writable to create it",
            )
        ]
    return []


def web_problems(site: Site) -> list[Problem]:
    """Everything wrong with `[web]` and its files; none when there is no `[web]` table."""
    if site.config.web is None:
        return []
    settings = _resolve(site, site.config.web)
    shown = str(site.path)
    problems: list[Problem] = []
    try:
        load_users(settings.users_path)
    except ConfigError as exc:
        problems.extend(
            Problem(p.file, p.key, p.message) if p.key else Problem(shown, "web.users", str(p))
            for p in exc.problems
        )
    problems.extend(_listen_problems(shown, settings))
    problems.extend(_tls_problems(shown, settings))
    problems.extend(_key_problems(shown, settings.session_key_path))
    return problems


def users_of(site: Site) -> int:
    """How many users the site's console has (0 without `[web]` or without a readable
    users file: check-config reports why)."""
    if site.config.web is None:
        return 0
    try:
        return len(load_users(_resolve(site, site.config.web).users_path))
    except ConfigError:
        return 0


def web_settings(site: Site) -> WebSettings:
    """The console's settings; ConfigError listing every problem (as check-config does)."""
    section = web_section(site)
    problems = web_problems(site)
    if problems:
        raise ConfigError(problems)
    return _resolve(site, section)


def session_key(path: Path) -> bytes:
    """The key that signs session cookies: read, or created with mode 0600 at first start
    (kept across restarts, so a restarted console keeps its users logged in)."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(SESSION_KEY_BYTES) + "\n")
    return path.read_text(encoding="ascii").strip().encode()
