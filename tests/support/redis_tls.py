"""A real ``redis-server`` speaking TLS, with a CA, server and client certificates made here.

The certificates come from ``trustme`` (a test dependency): a CA, a server
certificate for ``127.0.0.1`` and ``localhost``, and a client certificate, all
written as PEM files. ``other_ca`` is an unrelated CA, for the "wrong CA" case.
The server also keeps a plain port (``admin_client()``) so a test can set it up
and look inside without TLS; clients under test use ``url`` (``rediss://``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis
import trustme

from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.redis_server import RedisServer


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("connectome-sse-client")
        files = cls(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
            other_ca=directory / "other-ca.pem",
        )
        ca.cert_pem.write_to_path(str(files.ca))
        server.private_key_pem.write_to_path(str(files.server_key))
        files.server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        client.private_key_pem.write_to_path(str(files.client_key))
        files.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
        trustme.CA().cert_pem.write_to_path(str(files.other_ca))
        return files


class TlsRedisServer:
    """redis-server with ``--tls-port``; ``require_client_cert`` sets ``--tls-auth-clients``."""

    def __init__(self, workdir: Path, require_client_cert: bool = True) -> None:
        self.files = TlsFiles.make(workdir / "tls")
        self.tls_port = free_port()
        self.server = RedisServer(
            workdir / "redis",
            extra_args=(
                "--tls-port",
                str(self.tls_port),
                "--tls-cert-file",
                str(self.files.server_cert),
                "--tls-key-file",
                str(self.files.server_key),
                "--tls-ca-cert-file",
                str(self.files.ca),
                "--tls-auth-clients",
                "yes" if require_client_cert else "no",
            ),
        )

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"

    def env(self, *, ca: Path | None = None, client_cert: bool = True) -> dict[str, str]:
        """The TLS settings of a process under test (``ca`` replaces the right CA)."""
        env = {"REDIS_URL": self.url, "REDIS_TLS_CA_FILE": str(ca or self.files.ca)}
        if client_cert:
            env["REDIS_TLS_CERT_FILE"] = str(self.files.client_cert)
            env["REDIS_TLS_KEY_FILE"] = str(self.files.client_key)
        return env

    def admin_client(self) -> redis.Redis:
        return self.server.client()

    def start(self) -> TlsRedisServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
