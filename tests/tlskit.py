"""Throw-away TLS material for tests: a CA, a server cert for 127.0.0.1/localhost, a client cert.

Made at test time with the openssl command line (no key is ever committed). Each call makes
a fresh CA, so two calls give two CAs that do not trust each other (the wrong-CA test).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(name: str, cwd: Path) -> None:
    # EC keys: generated in milliseconds, where RSA 2048 takes a noticeable share of a second.
    _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name, cwd=cwd)


def _signed(name: str, subject: str, ext: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _run("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(ext)
    _run(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.pem", cwd=cwd,
    )  # fmt: skip


def make_tls_files(folder: Path) -> TlsFiles:
    """Write ca.pem, server.pem/.key and client.pem/.key into folder (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    _key("ca.key", folder)
    _run(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2",
        "-subj", "/CN=sorterd test CA", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _signed(
        "server",
        "/CN=localhost",
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        folder,
    )
    _signed(
        "client",
        "/CN=sorterd-test-client",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        folder,
    )
    for path in folder.glob("*.key"):
        path.chmod(0o600)
    return TlsFiles(
        ca_cert=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
