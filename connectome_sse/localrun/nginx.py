"""The project's nginx configuration, rendered and run in front of local gateways.

``services/nginx/nginx.conf.template`` (the file compose uses) is found next to
an editable install or given by path; it is rendered as the image does and nginx
runs in the foreground under a throw-away prefix.
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
from typing import Protocol, Self

import connectome_sse
from connectome_sse.localrun.metrics import status_of
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess
from connectome_sse.localrun.redis_server import require_program
from connectome_sse.localrun.wait import wait_for

TEMPLATE_IN_REPO = Path("services") / "nginx" / "nginx.conf.template"
_PLACEHOLDER = re.compile(r"\$\{(LB_[A-Za-z0-9_]*)\}")
# The template's upstream group, for gateways at fixed addresses.
GROUP = "sse_gateways"
# nginx's streams per client address (LB_STREAMS_PER_CLIENT): every local client is
# 127.0.0.1, so only the gateways' own limit (SSE_MAX_STREAMS_PER_CLIENT) should bite.
STREAMS_PER_CLIENT = 65_535  # the largest nginx takes


class TemplateNotFound(RuntimeError):
    """The nginx template is not where an editable install keeps it; one line."""


def find_template(path: Path | None = None) -> Path:
    """``path`` if given, else the repository's template next to an editable install."""
    candidate = path or Path(connectome_sse.__file__).resolve().parents[1] / TEMPLATE_IN_REPO
    if not candidate.is_file():
        raise TemplateNotFound(
            f"nginx template not found at {candidate}: it ships with the repository, not the "
            "package; run from an editable install of the repository (pip install -e .) "
            "or give its path (--nginx-template)"
        )
    return candidate


def render(text: str, values: Mapping[str, str]) -> str:
    """Substitute ``${LB_...}``, all of which must be given, as the image's envsubst does."""
    missing = set(_PLACEHOLDER.findall(text)) - set(values)
    if missing:
        raise ValueError(f"nginx template needs {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def self_signed_pair(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate and key for 127.0.0.1 (the template's TLS listener needs one)."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        [
            require_program("openssl"),
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def gateway_servers(addresses: Sequence[str]) -> str:
    """The ``LB_GATEWAYS`` value for fixed gateway addresses (``host:port``)."""
    return " ".join(f"server {address};" for address in addresses)


def template_values(
    port: int,
    tls_port: int,
    cert: Path,
    key: Path,
    gateways: Sequence[str],
    streams_per_client: int = STREAMS_PER_CLIENT,
) -> dict[str, str]:
    """The template's ``LB_`` values for gateways at fixed loopback addresses."""
    return {
        "LB_LISTEN": f"127.0.0.1:{port}",
        "LB_TLS_LISTEN": f"127.0.0.1:{tls_port}",
        "LB_TLS_CERT": str(cert),
        "LB_TLS_KEY": str(key),
        "LB_BACKEND": GROUP,
        "LB_GATEWAYS": gateway_servers(gateways),
        # Never asked while LB_BACKEND is the group; nginx wants an address.
        "LB_RESOLVER": "127.0.0.1",
        "LB_STREAMS_PER_CLIENT": str(streams_per_client),
    }


class CertAndKey(Protocol):
    """A certificate (chain) and its key, PEM files (the tests' ``TlsFiles`` is one)."""

    @property
    def cert(self) -> Path: ...

    @property
    def key(self) -> Path: ...


@dataclass(frozen=True)
class SelfSigned:
    cert: Path
    key: Path


class NginxServer:
    """Debian's nginx with the project's configuration, on free loopback ports.

    Plain HTTP on ``port``, HTTPS with HTTP/2 on ``tls_port`` with ``tls``, by
    default a self-signed pair made at the first start. ``streams_per_client``
    is nginx's own per-address limit (``LB_STREAMS_PER_CLIENT``).
    """

    def __init__(
        self,
        gateways: Sequence[str],
        template: Path | None = None,
        *,
        port: int | None = None,
        tls: CertAndKey | None = None,
        streams_per_client: int = STREAMS_PER_CLIENT,
    ) -> None:
        self.template = find_template(template)
        self.gateways = list(gateways)
        self.streams_per_client = streams_per_client
        self.port = port or free_port()
        self.tls_port = free_port()
        # Not under a 0700 directory (pytest's tmp tree): workers run as `nobody` when
        # nginx starts as root, and must reach the prefix.
        self.prefix = Path(tempfile.mkdtemp(prefix="connectome-nginx-"))
        self.prefix.chmod(0o755)
        self.conf = self.prefix / "nginx.conf"
        self.tls = tls
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    def certificate(self) -> CertAndKey:
        if self.tls is None:
            self.tls = SelfSigned(*self_signed_pair(self.prefix))
        return self.tls

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
        tls = self.certificate()
        values = template_values(
            self.port, self.tls_port, tls.cert, tls.key, self.gateways, self.streams_per_client
        )
        self.conf.write_text(render(self.template.read_text(), values))
        return self.conf

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the rendered configuration."""
        self.write_config()
        return subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30, check=False
        )

    def start(self) -> Self:
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

    def status(self, path: str) -> int | None:
        """The status of GET ``path`` on the plain port, None when nothing answers."""
        return status_of(self.url + path)

    def log(self) -> str:
        error_log = self.prefix / "error.log"
        early = error_log.read_text(errors="replace") if error_log.exists() else ""
        return early + (self.process.log() if self.process else "")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)
        shutil.rmtree(self.prefix, ignore_errors=True)
