"""The project's own nginx configuration, rendered and run by the tests in front of real gateways.

``services/nginx/nginx.conf.template`` is the file docker compose uses too (in
the image services/nginx builds). ``connectome_sse.localrun.nginx`` renders it
by the rule that image applies to it at start (envsubst of the variables that
are defined, nothing else) and runs nginx; here it gets a certificate from a
test CA by default.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

from connectome_sse.localrun import nginx as localrun_nginx
from connectome_sse.localrun.nginx import STREAMS_PER_CLIENT, render
from connectome_sse.localrun.nginx import gateway_servers as gateway_servers  # nginx_variants

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "services" / "nginx" / "nginx.conf.template"
# The variables the template takes; the nginx image substitutes the set names matching ^LB_.
TEMPLATE_PREFIX = "LB_"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_variables(text: str | None = None) -> set[str]:
    """The ``${LB_...}`` names the template expects."""
    text = TEMPLATE.read_text() if text is None else text
    return {name for name in _PLACEHOLDER.findall(text) if name.startswith(TEMPLATE_PREFIX)}


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


def render_for(
    listen_port: int,
    gateways: Sequence[str],
    tls_port: int,
    cert: Path,
    key: Path,
    streams_per_client: int = STREAMS_PER_CLIENT,
) -> str:
    """The configuration for gateways at fixed loopback addresses: the group, no DNS."""
    values = localrun_nginx.template_values(
        listen_port, tls_port, cert, key, gateways, streams_per_client
    )
    return render(TEMPLATE.read_text(), values)


class NginxServer(localrun_nginx.NginxServer):
    """Debian's nginx with the project's configuration, on free loopback ports.

    Plain HTTP on ``port``, HTTPS with HTTP/2 on ``tls_port``; the certificate is
    ``tls`` if given, else a pair from a test CA made for this server
    (``tls.ca`` is what clients trust). ``streams_per_client`` is nginx's own
    per-address limit (``LB_STREAMS_PER_CLIENT``).
    """

    tls: TlsFiles

    def __init__(
        self,
        gateways: Sequence[str],
        port: int | None = None,
        tls: TlsFiles | None = None,
        streams_per_client: int = STREAMS_PER_CLIENT,
    ) -> None:
        super().__init__(gateways, TEMPLATE, port=port, streams_per_client=streams_per_client)
        self.tls = tls or TlsFiles.issue(self.prefix)
