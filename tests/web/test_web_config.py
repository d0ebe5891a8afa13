"""`[web]` in check-config and at start, `--add-user`, and the console over HTTP and HTTPS
(a real `run_web` on a real socket; no broker needed for sign-in and refusals)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
import yarl

from drivers.broker import free_port
from sorter.config import load_site
from sorterd.cli import main
from sorterd.web.server import run_web
from sorterd.web.users import Role, Users, add_user
from tests.linekit import PLAN_PATH

PASSWORD = "correct horse battery"


def _site(folder: Path, web: str) -> Path:
    site = folder / "site.toml"
    site.write_text(
        f"""[site]
name = "casablanca-hub"
line = "sorter-1"
[plc]
url = "tcp://127.0.0.1:5020"
[[scanner]]
name = "tunnel-1"
url = "tcp://127.0.0.1:5021"
[mqtt]
url = "mqtt://127.0.0.1:{free_port()}"
topic_prefix = "webcfg/hub/line-1"
[plan]
file = "{PLAN_PATH}"
[journal]
path = "journal.sqlite"
{web}
"""
    )
    return site


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """main() points structlog at this test's captured stderr, which closes after it."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_add_user_writes_a_user_and_exits_0(tmp_path: Path) -> None:
    from tests.web.kit import add_user as add_user_cli

    site = _site(tmp_path, "[web]\n")
    done = add_user_cli(site, "olga", "operator", PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    users = tomllib.loads((tmp_path / "users.toml").read_text())["users"]
    assert users["olga"]["role"] == "operator"
    assert users["olga"]["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in (tmp_path / "users.toml").read_text()
    assert (tmp_path / "users.toml").stat().st_mode & 0o077 == 0
    found = Users(tmp_path / "users.toml")
    assert found.verify("olga", PASSWORD) is not None
    assert found.verify("olga", PASSWORD + "x") is None
    # A short password is refused with one line, and nothing is written.
    short = add_user_cli(site, "victor", "viewer", "short")
    assert short.returncode == 1
    assert short.stderr.startswith("error: the password")
    assert "Traceback" not in short.stderr
    assert "victor" not in (tmp_path / "users.toml").read_text()


def test_check_config_lists_every_web_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    (tmp_path / "web-session.key").write_text("short")
    site = _site(
        tmp_path,
        '[web]\nlisten = "127.0.0.1:8080"\nusers = "nobody.toml"\n'
        'cert_file = "cert.pem"\nkey_file = "key.pem"\n',
    )
    assert main(["check-config", "-c", str(site)]) == 1
    errors = "\n".join(_errors(capsys))
    assert "nobody.toml" in errors
    assert "--add-user" in errors
    assert "web.cert_file" in errors
    assert "do not load as a pair" in errors
    assert "web.session_key_file" in errors

    site = _site(tmp_path, '[web]\nlisten = "8080"\ncert_file = "cert.pem"\nlistn = 1\n')
    assert main(["check-config", "-c", str(site)]) == 1
    errors = "\n".join(_errors(capsys))
    assert "web.listen" in errors
    assert "host:port" in errors
    assert "web.listn: unknown key" in errors


def test_a_config_check_config_accepts_starts_and_a_bad_one_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site(tmp_path, f'[web]\nlisten = "127.0.0.1:{free_port()}"\n')
    # No users file: check-config and `sorterd web` say the same, in one line each.
    assert main(["check-config", "-c", str(site)]) == 1
    check = _errors(capsys)
    assert main(["web", "-c", str(site)]) == 1
    assert _errors(capsys) == check
    add_user(tmp_path / "users.toml", "olga", Role.OPERATOR, PASSWORD)
    assert main(["check-config", "-c", str(site)]) == 0
    capsys.readouterr()
    # Without [web], `sorterd web` says what to add.
    (tmp_path / "bare").mkdir()
    bare = _site(tmp_path / "bare", "")
    assert main(["web", "-c", str(bare)]) == 1
    assert "no [web] table" in "\n".join(_errors(capsys))


@contextlib.asynccontextmanager
async def _console(site: Path, env: dict[str, str] | None = None) -> AsyncIterator[None]:
    stop, started = asyncio.Event(), asyncio.Event()
    loaded = load_site(site, env=env or {})
    task = asyncio.create_task(run_web(loaded, stop, started), name="test-web")
    try:
        await asyncio.wait_for(started.wait(), 30)
        yield
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


@pytest.mark.requires("openssl")
async def test_console_serves_tls_and_refuses_without_a_session(tmp_path: Path) -> None:
    from tests.tlskit import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    port = free_port()
    site = _site(
        tmp_path,
        f'[web]\nlisten = "127.0.0.1:{port}"\n'
        f'cert_file = "{tls.server_cert}"\nkey_file = "{tls.server_key}"\n',
    )
    add_user(tmp_path / "users.toml", "olga", Role.OPERATOR, PASSWORD)
    add_user(tmp_path / "users.toml", "victor", Role.VIEWER, PASSWORD)
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    base = f"https://127.0.0.1:{port}"
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address, not only names
    async with _console(site), aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{base}/", ssl=context, allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/login"
        async with http.post(f"{base}/api/chutes/3/disable", ssl=context) as r:
            assert r.status == 401
        form = {"username": "olga", "password": "wrong password"}
        async with http.post(f"{base}/login", data=form, ssl=context) as r:
            assert r.status == 401
            assert 'name="password"' in await r.text()
        form = {"username": "victor", "password": PASSWORD}
        async with http.post(f"{base}/login", data=form, ssl=context, allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/"
            cookie = r.headers["Set-Cookie"]
            assert "Secure" in cookie
            assert "HttpOnly" in cookie
            assert "SameSite=Strict" in cookie
        async with http.get(f"{base}/", ssl=context) as r:
            page = await r.text()
            assert r.status == 200
            assert 'data-role="viewer"' in page
        token = page.split('name="csrf-token" content="')[1].split('"')[0]
        headers = {"X-CSRF-Token": token}
        async with http.post(f"{base}/api/chutes/3/disable", headers=headers, ssl=context) as r:
            assert r.status == 403
            assert "operators only" in (await r.json())["reason"]
        # Guessing (one wrong password above, four here): the name is refused for a while,
        # even with the right password.
        for _ in range(4):
            form = {"username": "olga", "password": "guess"}
            async with http.post(f"{base}/login", data=form, ssl=context) as r:
                assert r.status == 401
        form = {"username": "olga", "password": PASSWORD}
        async with http.post(f"{base}/login", data=form, ssl=context, allow_redirects=False) as r:
            assert r.status == 429
            assert int(r.headers["Retry-After"]) > 0


def test_busy_port_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        site = _site(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\n')
        add_user(tmp_path / "users.toml", "olga", Role.OPERATOR, PASSWORD)
        assert main(["web", "-c", str(site)]) == 1
    errors = _errors(capsys)
    assert len(errors) == 1
    assert str(port) in errors[0]


@pytest.mark.requires("postgresql")
async def test_search_asks_the_archive_when_the_site_has_one(
    tmp_path: Path, archive_db: str
) -> None:
    from drivers.archive_db import ArchiveDb, connect
    from drivers.archive_rows import parse_message
    from tests.archivekit import archive_site
    from tests.pgkit import ROLE_PASSWORD

    port = free_port()
    site = archive_site(
        tmp_path, f"mqtt://127.0.0.1:{free_port()}", archive_db, ["webcfg/hub/+"],
        extra=f'\n[web]\nlisten = "127.0.0.1:{port}"\n',
    )  # fmt: skip
    add_user(tmp_path / "users.toml", "victor", Role.VIEWER, PASSWORD)
    decision = {
        "id": "d-archived-1", "ts": "2026-12-07T10:00:00.000Z", "tracking_id": 4711, "seq": 2,
        "codes": ["RB123456785GB"], "barcode": "RB123456785GB", "destination": "RABAT",
        "chute": 7, "reason": "ok", "recirculations": 0, "latency_ms": 0.4,
    }  # fmt: skip
    db = ArchiveDb(await connect(archive_db, ROLE_PASSWORD))
    try:
        await db.migrate()
        row = parse_message("webcfg/hub/line-7/decisions", json.dumps(decision).encode())
        assert await db.write([row.values()]) == 1
    finally:
        await db.conn.close()
    base = f"http://127.0.0.1:{port}"
    jar = aiohttp.CookieJar(unsafe=True)
    env = {"SORTERD_ARCHIVE_PASSWORD": ROLE_PASSWORD}
    async with _console(site, env), aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{base}/api/search", params={"code": "RB123456785GB"}) as r:
            assert r.status == 401
        form = {"username": "victor", "password": PASSWORD}
        async with http.post(f"{base}/login", data=form, allow_redirects=False) as r:
            assert r.status == 303
        async with http.get(f"{base}/api/search", params={"code": "RB123456785GB"}) as r:
            found = await r.json()
        assert found["source"] == "archive"
        (only,) = found["rows"]
        assert (only["line"], only["tracking_id"], only["reason"]) == (
            "webcfg/hub/line-7", 4711, "ok",
        )  # fmt: skip
        async with http.get(f"{base}/api/search", params={"code": "NOSUCHCODE"}) as r:
            assert (await r.json())["rows"] == []


async def test_guesses_sent_all_at_once_are_throttled_too(tmp_path: Path) -> None:
    """The throttle once counted a failure only after the (awaited) password check, so 40
    guesses sent at once were all checked: 5 a minute for a name must hold for them too."""
    port = free_port()
    site = _site(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\n')
    add_user(tmp_path / "users.toml", "olga", Role.OPERATOR, PASSWORD)
    url = f"http://127.0.0.1:{port}/login"
    async with _console(site), aiohttp.ClientSession() as http:

        async def guess(n: int) -> int:
            form = {"username": "olga", "password": f"guess-{n}"}
            async with http.post(url, data=form, allow_redirects=False) as r:
                return r.status

        answers = await asyncio.gather(*(guess(n) for n in range(40)))
        assert answers.count(401) == 5
        assert answers.count(429) == 35
        # Another name from the same address: a good password still signs in (its
        # attempt is counted for the address, then taken back), up to the address's limit.
        add_user(tmp_path / "users.toml", "victor", Role.VIEWER, PASSWORD)
        form = {"username": "victor", "password": PASSWORD}
        for _ in range(20):
            async with http.post(url, data=form, allow_redirects=False) as r:
                assert r.status == 303


async def test_a_chute_number_int_refuses_is_404_not_a_server_error(tmp_path: Path) -> None:
    port = free_port()
    site = _site(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\n')
    add_user(tmp_path / "users.toml", "olga", Role.OPERATOR, PASSWORD)
    base = f"http://127.0.0.1:{port}"
    jar = aiohttp.CookieJar(unsafe=True)
    async with _console(site), aiohttp.ClientSession(cookie_jar=jar) as http:
        form = {"username": "olga", "password": PASSWORD}
        async with http.post(f"{base}/login", data=form, allow_redirects=False) as r:
            assert r.status == 303
        async with http.get(f"{base}/") as r:
            token = (await r.text()).split('name="csrf-token" content="')[1].split('"')[0]
        for number in ("%C2%B2", "%D9%A3"):  # '²' and an Arabic-Indic 3: isdigit() takes both
            async with http.post(
                f"{base}/api/chutes/{number}/disable", headers={"X-CSRF-Token": token}
            ) as r:
                assert r.status == 404


@pytest.mark.requires("openssl")
def test_an_encrypted_tls_key_is_one_line_not_a_pass_phrase_prompt(tmp_path: Path) -> None:
    """OpenSSL asks for the pass phrase of an encrypted key on the terminal: check-config
    once sat there waiting. On a terminal (script(1) gives it one) it says so and exits 1."""
    import shutil
    import subprocess
    import sys

    from tests.web.kit import REPO

    script = shutil.which("script")
    assert script is not None, "script (util-linux), for a terminal"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", "web.key", "-out",
         "web.crt", "-days", "2", "-subj", "/CN=localhost", "-passout", "pass:secret"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    site = _site(tmp_path, '[web]\ncert_file = "web.crt"\nkey_file = "web.key"\n')
    add_user(tmp_path / "users.toml", "olga", Role.OPERATOR, PASSWORD)
    command = f"{sys.executable} -m sorterd.cli check-config -c {site}"
    try:
        done = subprocess.run(
            [script, "-qec", command, "/dev/null"], cwd=REPO, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("check-config waited for a pass phrase")
    assert done.returncode == 1, done.stdout
    assert "pass phrase" not in done.stdout.lower()
    assert "web.key_file" in done.stdout
    assert "encrypted" in done.stdout
    assert "Traceback" not in done.stdout


async def test_a_session_ends_at_sign_out_and_with_a_new_password(tmp_path: Path) -> None:
    """A cookie copied before its user signed out, or before their password was changed
    (`--add-user` again, as after a leaked password), once went on working for
    session_hours."""
    port = free_port()
    site = _site(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\n')
    users = tmp_path / "users.toml"
    add_user(users, "olga", Role.OPERATOR, PASSWORD)
    base = f"http://127.0.0.1:{port}"

    async def sign_in(http: aiohttp.ClientSession, password: str) -> tuple[str, str]:
        form = {"username": "olga", "password": password}
        async with http.post(f"{base}/login", data=form, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.cookies["sorterd_session"].value
        async with http.get(f"{base}/", cookies={"sorterd_session": cookie}) as r:
            token = (await r.text()).split('name="csrf-token" content="')[1].split('"')[0]
        return cookie, token

    async def whoami(http: aiohttp.ClientSession, cookie: str) -> int:
        async with http.get(f"{base}/api/session", cookies={"sorterd_session": cookie}) as r:
            return r.status

    async with _console(site), aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        cookie, token = await sign_in(http, PASSWORD)
        assert await whoami(http, cookie) == 200
        async with http.post(
            f"{base}/logout", data={"csrf": token}, cookies={"sorterd_session": cookie},
            allow_redirects=False,
        ) as r:  # fmt: skip
            assert r.status == 303
        assert await whoami(http, cookie) == 401
        async with http.post(
            f"{base}/api/chutes/3/disable", cookies={"sorterd_session": cookie},
            headers={"X-CSRF-Token": token},
        ) as r:  # fmt: skip
            assert r.status == 401

        cookie, _ = await sign_in(http, PASSWORD)
        assert await whoami(http, cookie) == 200
        add_user(users, "olga", Role.OPERATOR, PASSWORD + " new")
        assert await whoami(http, cookie) == 401
        cookie, _ = await sign_in(http, PASSWORD + " new")
        assert await whoami(http, cookie) == 200


async def test_static_files_outside_the_folder_or_with_a_nul_are_404(tmp_path: Path) -> None:
    """A %00 in a static file's name once answered 500 (ValueError: embedded null byte)."""
    port = free_port()
    site = _site(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\n')
    add_user(tmp_path / "users.toml", "olga", Role.OPERATOR, PASSWORD)
    base = f"http://127.0.0.1:{port}"
    async with _console(site), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/static/app.js") as r:
            assert r.status == 200
        for path in ("x%00.js", "..%2fapp.py", "..%2f..%2fweb%2fapp.py", "%2e%2e%2fserver.py"):
            async with http.get(yarl.URL(f"{base}/static/{path}", encoded=True)) as r:
                assert r.status == 404, path


def test_a_listen_address_of_another_machine_is_a_check_config_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """192.0.2.1 (TEST-NET-1) is no address of this machine: check-config once accepted it
    and `sorterd web` then failed to bind (errno 99), against "a config check-config
    accepts starts". A listen host of "[]" bound every interface."""
    add_user(tmp_path / "users.toml", "olga", Role.OPERATOR, PASSWORD)
    for listen in ("192.0.2.1:8080", "[]:8080"):
        site = _site(tmp_path, f'[web]\nlisten = "{listen}"\n')
        assert main(["check-config", "-c", str(site)]) == 1
        assert any("web.listen" in e for e in _errors(capsys))
    site = _site(tmp_path, f'[web]\nlisten = "127.0.0.1:{free_port()}"\n')
    assert main(["check-config", "-c", str(site)]) == 0
