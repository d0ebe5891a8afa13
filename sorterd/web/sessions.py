"""Sessions in signed cookies, their CSRF token, and login throttling. No I/O, no clock of
its own (times come in), so tests drive them with plain numbers.

A session cookie carries the user's name, a CSRF token and when it was issued, signed with
the console's key (itsdangerous, HMAC-SHA1 over the payload and its time stamp). The role
is not in the cookie: it is read from the users file on every request, so a user removed
or demoted loses their rights at once. The CSRF token is sent back by the page in the
header X-CSRF-Token with every command: a forged cross-site request cannot read it (and,
the cookie being SameSite=Strict, does not carry the cookie either).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["COOKIE_NAME", "Session", "SessionSigner", "Throttle", "password_stamp"]

COOKIE_NAME = "sorterd_session"
_SALT = "sorterd-web-session"
# A throttle's key as kept: a user name is at most 64 characters (users.NAME_PATTERN), an
# address less; a sign-in form may carry a user name of 64 KiB, and 10,000 of those kept
# would be 640 MB.
KEY_CHARS_KEPT = 128


# Sessions signed out that are remembered (their cookies refused until they expire); the
# oldest are forgotten first, and they would have expired before a floor's shift signs
# out this many times.
ENDED_KEPT = 100_000


def password_stamp(password_hash: str) -> str:
    """What a session remembers of the password it was opened with: a new password (or the
    user written again with `--add-user`) ends the user's sessions opened before."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    csrf: str
    stamp: str = ""  # password_stamp of the user's hash at sign-in

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class SessionSigner:
    """Signs and checks session cookies; `max_age_s` is the session's lifetime."""

    def __init__(self, key: bytes, max_age_s: float) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt=_SALT)
        self.max_age_s = max_age_s
        # The CSRF tokens (one per session) of sessions signed out: a cookie copied before
        # its user signed out must not go on working. Kept in memory: a restarted console
        # forgets them (docs/web.md).
        self._ended: OrderedDict[str, None] = OrderedDict()

    def issue(self, user: str, stamp: str = "") -> tuple[str, Session]:
        session = Session(user, secrets.token_urlsafe(24), stamp)
        value = self._serializer.dumps({"u": session.user, "c": session.csrf, "s": stamp})
        return value, session

    def end(self, session: Session) -> None:
        """Sign `session` out: its cookie is refused from now on."""
        self._ended[session.csrf] = None
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def check(self, value: str | None) -> Session | None:
        """The session of a cookie whose signature holds and which has not expired."""
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=round(self.max_age_s))
        except BadSignature:  # SignatureExpired is a BadSignature too
            return None
        if not isinstance(data, dict):
            return None
        user, csrf, stamp = data.get("u"), data.get("c"), data.get("s", "")
        if not isinstance(user, str) or not isinstance(csrf, str) or not isinstance(stamp, str):
            return None
        if csrf in self._ended:
            return None
        return Session(user, csrf, stamp)


class Throttle:
    """At most `limit` failed sign-ins per `window_s` for one key (a user name, or a client
    address); beyond that, sign-ins for that key are refused until the oldest failure leaves
    the window (a correct password too: the point is to stop guessing). Bounded: the least
    recently failing keys are forgotten first."""

    def __init__(self, limit: int, window_s: float = 60.0, keys_kept: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.keys_kept = keys_kept
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now_s: float) -> deque[float] | None:
        key = key[:KEY_CHARS_KEPT]
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now_s - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after_s(self, key: str, now_s: float) -> float:
        """0 when a sign-in may be tried now, else the seconds to wait."""
        times = self._recent(key, now_s)
        if times is None or len(times) < self.limit:
            return 0.0
        return times[0] + self.window_s - now_s

    def failed(self, key: str, now_s: float) -> None:
        key = key[:KEY_CHARS_KEPT]
        times = self._recent(key, now_s) or deque(maxlen=self.limit)
        times.append(now_s)
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self.keys_kept:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key[:KEY_CHARS_KEPT], None)

    def forgive(self, key: str, at_s: float) -> None:
        """Take back the failure counted at `at_s` (an attempt counted before its check,
        which then succeeded)."""
        times = self._failures.get(key[:KEY_CHARS_KEPT])
        if times is not None and at_s in times:
            times.remove(at_s)
