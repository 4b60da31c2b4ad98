"""The project's own nginx configuration, rendered and run by the tests in front of real gateways.

``services/nginx/nginx.conf.template`` is the file docker compose uses too. It
is rendered here by the rule the nginx image applies to it (envsubst of the
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
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import ManagedProcess
from tests.support.redis_server import require_program
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "services" / "nginx" / "nginx.conf.template"
# The variables the template takes; compose's nginx image substitutes names matching ^LB_.
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


def render_for(listen_port: int, gateways: Sequence[str]) -> str:
    return render(
        {"LB_LISTEN": f"127.0.0.1:{listen_port}", "LB_GATEWAYS": gateway_servers(gateways)}
    )


class NginxServer:
    """Debian's nginx with the project's configuration, listening on a free loopback port."""

    def __init__(self, gateways: Sequence[str], port: int | None = None) -> None:
        self.gateways = list(gateways)
        self.port = port or free_port()
        # Not under pytest's 0700 tmp tree: the workers run as `nobody` when nginx
        # is started by root, and must be able to reach the prefix.
        self.prefix = Path(tempfile.mkdtemp(prefix="connectome-nginx-"))
        self.prefix.chmod(0o755)
        self.conf = self.prefix / "nginx.conf"
        self.process: ManagedProcess | None = None

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
        self.conf.write_text(render_for(self.port, self.gateways))
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
