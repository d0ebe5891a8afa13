"""The web console's users file: names, roles and argon2 password hashes (docs/web.md).

```toml
[users.alice]
role = "operator"                     # or "viewer"
password_hash = "$argon2id$v=19$..."
```

`sorterd web -c SITE.toml --add-user NAME --role ROLE` writes one user (a new one, or a new
password and role for a known name) with the password read from standard input; the file
is replaced atomically and readable by its owner only. The console reads the file again
when it changes, so a user removed or demoted loses their rights at their next request.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sorter.config import ConfigError, Problem
from sorter.errors import SorterdError

__all__ = [
    "NAME_PATTERN",
    "Role",
    "User",
    "UserError",
    "Users",
    "add_user",
    "check_name",
    "load_users",
    "read_password",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
_HASHER = PasswordHasher()
# Verified against when the name is unknown, so that a wrong name costs as long as a
# wrong password and the answer's time does not say which names exist.
_DUMMY_HASH = _HASHER.hash("sorterd-no-such-user")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"


class UserError(SorterdError):
    """A user or password that cannot be written (a bad name, an empty password)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str


def _problems_of(table: object, shown: str) -> tuple[dict[str, User], list[Problem]]:
    users: dict[str, User] = {}
    problems: list[Problem] = []
    if not isinstance(table, dict):
        return users, [Problem(shown, "users", "must be a table of [users.NAME] tables")]
    for name, entry in table.items():
        key = f"users.{name}"
        if not NAME_PATTERN.match(name):
            problems.append(Problem(shown, key, "a name is letters, digits, _ . @ -"))
            continue
        if not isinstance(entry, dict):
            problems.append(Problem(shown, key, "must be a table with role and password_hash"))
            continue
        unknown = set(entry) - {"role", "password_hash"}
        if unknown:
            problems.append(Problem(shown, f"{key}.{sorted(unknown)[0]}", "unknown key (typo?)"))
        role, hashed = entry.get("role"), entry.get("password_hash")
        if role not in {r.value for r in Role}:
            problems.append(Problem(shown, f"{key}.role", "must be viewer or operator"))
            continue
        if not isinstance(hashed, str) or not hashed.startswith("$argon2"):
            problems.append(
                Problem(shown, f"{key}.password_hash", "not an argon2 hash (use --add-user)")
            )
            continue
        users[name] = User(name, Role(role), hashed)
    return users, problems


def load_users(path: Path) -> dict[str, User]:
    """Every user of the file; ConfigError naming the file and key of each problem."""
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [
                Problem(
                    shown,
                    "",
                    "no such users file: create it with "
                    "`sorterd web -c SITE.toml --add-user NAME --role operator`",
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(shown, "", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([Problem(shown, "", f"not a TOML users file: {exc}")]) from None
    unknown = set(data) - {"users"}
    problems = [Problem(shown, key, "unknown key (typo?)") for key in sorted(unknown)]
    users, found = _problems_of(data.get("users", {}), shown)
    problems.extend(found)
    # A file without users is a console nobody can sign in to yet, not a broken one: it
    # starts, and `--add-user` adds the first (check-config says so).
    if problems:
        raise ConfigError(problems)
    return users


class Users:
    """The users file as the console sees it: read again when its mtime or size changes.
    A file that turns bad while the console runs keeps the last good users (and logs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}
        self.reload()

    def reload(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._users = load_users(self.path)
            self._stamp = stamp

    def get(self, name: str) -> User | None:
        # A file gone bad keeps the last good users; check-config says what is wrong.
        with contextlib.suppress(OSError, ConfigError):
            self.reload()
        return self._users.get(name)

    def verify(self, name: str, password: str) -> User | None:
        """The user when the password is theirs, else None (in about the same time)."""
        user = self.get(name)
        try:
            _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user


def read_password(text: str) -> str:
    """The password from standard input: its first line, without the line break."""
    password = text.split("\n", 1)[0].removesuffix("\r")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(
            f"the password (the first line of standard input) must have at least "
            f"{MIN_PASSWORD_CHARS} characters"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise UserError(f"the password is over {MAX_PASSWORD_CHARS} characters")
    return password


def _render(users: dict[str, User]) -> str:
    out = ["# sorterd web console users (docs/web.md); written by `sorterd web --add-user`\n"]
    for user in sorted(users.values(), key=lambda u: u.name):
        # json.dumps writes a TOML basic string for these characters (NAME_PATTERN, argon2).
        out.append(f"\n[users.{json.dumps(user.name)}]\n")
        out.append(f"role = {json.dumps(user.role.value)}\n")
        out.append(f"password_hash = {json.dumps(user.password_hash)}\n")
    return "".join(out)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UserError(
            f"user name {name!r}: 1-64 letters, digits and _ . @ -, starting with a letter or "
            "a digit"
        )
    return name


def add_user(path: Path, name: str, role: Role, password: str) -> bool:
    """Write `name` with `role` and the hash of `password` into the users file (created when
    missing); True when the name was new. The other users stay as they were."""
    check_name(name)
    users = load_users(path) if path.exists() else {}
    new = name not in users
    users[name] = User(name, role, _HASHER.hash(password))
    tmp = path.with_name(f".{path.name}.tmp")
    # A new file every time: O_CREAT keeps the mode of a file already there (a stale or
    # planted one readable by all would have made the users file so), and O_NOFOLLOW
    # refuses a symbolic link in its place.
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(_render(users))
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    return new
