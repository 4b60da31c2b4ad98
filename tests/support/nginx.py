"""The project's own nginx configuration, rendered and run by the tests in front of real gateways.

``services/nginx/nginx.conf.template`` is the file docker compose uses too (in
the image services/nginx builds). It is rendered here by the rule that image
applies to it at start (envsubst of the
variables that are defined, nothing else), and nginx runs in the foreground
under a throw-away prefix: ``-p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log``
with ``daemon off`` and the pid file in the prefix.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.ports import free_port
from tests.support.processes import ManagedProcess
from tests.support.redis_server import require_program
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "services" / "nginx" / "nginx.conf.template"
# The variables the template takes; the nginx image substitutes the set names matching ^LB_.
TEMPLATE_PREFIX = "LB_"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_variables(text: str | None = None) -> set[str]:
    """The ``${LB_...}`` names the template expects."""
    text = TEMPLATE.read_text() if text is None else text
    return {name for name in _PLACEHOLDER.findall(text) if name.startswith(TEMPLATE_PREFIX)}


def render(values: Mapping[str, str], text: str | None = None) -> str:
    """Substitute ``${NAME}`` for the given names only, as the image's envsubst step does."""
    text = TEMPLATE.read_text() if text is None else text
    missing = template_variables(text) - set(values)
    if missing:
        raise ValueError(f"nginx template needs {sorted(missing)}")

    def substitute(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return _PLACEHOLDER.sub(substitute, text)


def gateway_servers(addresses: Sequence[str]) -> str:
    """The ``LB_GATEWAYS`` value for fixed gateway addresses (``host:port``)."""
    return " ".join(f"server {address};" for address in addresses)


# The template's upstream group, for gateways at fixed addresses.
GROUP = "sse_gateways"


@dataclass(frozen=True)
class TlsFiles:
    """A certificate chain and key for nginx, and the CA a client must trust for them."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def issue(cls, directory: Path) -> TlsFiles:
        """A pair for 127.0.0.1 and localhost, signed by a test CA made here."""
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        files = cls(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
        files.cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(files.key))
        ca.cert_pem.write_to_path(str(files.ca))
        return files


# nginx's streams per client address (LB_STREAMS_PER_CLIENT) unless a test sets it:
# far above what any test opens, so tests of many streams from 127.0.0.1 are not
# limited by nginx (tests/e2e/test_auth_nginx.py tests the limit with a small one).
STREAMS_PER_CLIENT = 65_535  # the largest nginx takes


def render_for(
    listen_port: int,
    gateways: Sequence[str],
    tls_port: int,
    cert: Path,
    key: Path,
    streams_per_client: int = STREAMS_PER_CLIENT,
) -> str:
    """The configuration for gateways at fixed loopback addresses: the group, no DNS."""
    return render(
        {
            "LB_LISTEN": f"127.0.0.1:{listen_port}",
            "LB_TLS_LISTEN": f"127.0.0.1:{tls_port}",
            "LB_TLS_CERT": str(cert),
            "LB_TLS_KEY": str(key),
            "LB_BACKEND": GROUP,
            "LB_GATEWAYS": gateway_servers(gateways),
            # Never asked while LB_BACKEND is the group; nginx wants an address.
            "LB_RESOLVER": "127.0.0.1",
            "LB_STREAMS_PER_CLIENT": str(streams_per_client),
        }
    )


class NginxServer:
    """Debian's nginx with the project's configuration, on free loopback ports.

    Plain HTTP on ``port``, HTTPS with HTTP/2 on ``tls_port``; the certificate is
    ``tls`` if given, else a pair from a test CA made for this server
    (``tls.ca`` is what clients trust). ``streams_per_client`` is nginx's own
    per-address limit (``LB_STREAMS_PER_CLIENT``).
    """

    def __init__(
        self,
        gateways: Sequence[str],
        port: int | None = None,
        tls: TlsFiles | None = None,
        streams_per_client: int = STREAMS_PER_CLIENT,
    ) -> None:
        self.gateways = list(gateways)
        self.streams_per_client = streams_per_client
        self.port = port or free_port()
        self.tls_port = free_port()
        # Not under pytest's 0700 tmp tree: the workers run as `nobody` when nginx
        # is started by root, and must be able to reach the prefix.
        self.prefix = Path(tempfile.mkdtemp(prefix="connectome-nginx-"))
        self.prefix.chmod(0o755)
        self.conf = self.prefix / "nginx.conf"
        self.tls = tls or TlsFiles.issue(self.prefix)
        self.process: ManagedProcess | None = None

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        return [
            require_program("nginx"),
            "-p", f"{self.prefix}/",
            "-c", str(self.conf),
            "-e", str(self.prefix / "error.log"),
            "-g", f"daemon off; pid {self.prefix / 'nginx.pid'};",
            *extra,
        ]  # fmt: skip

    def write_config(self) -> Path:
        self.conf.write_text(
            render_for(
                self.port,
                self.gateways,
                self.tls_port,
                self.tls.cert,
                self.tls.key,
                self.streams_per_client,
            )
        )
        return self.conf

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the rendered configuration."""
        self.write_config()
        return subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30, check=False
        )

    def start(self) -> NginxServer:
        self.write_config()
        self.process = ManagedProcess(self.command(), self.prefix / "nginx.out").start()
        wait_for(self._accepts, timeout=15, what=f"nginx on port {self.port}")
        return self

    def _accepts(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"nginx exited:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        out = self.process.log() if self.process else ""
        error_log = self.prefix / "error.log"
        early = error_log.read_text(errors="replace") if error_log.exists() else ""
        return early + out

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
        shutil.rmtree(self.prefix, ignore_errors=True)
