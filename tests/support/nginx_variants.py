"""Small test-only nginx configurations that break SSE the ways the field does.

Not the project's configuration (that is ``services/nginx/nginx.conf.template``,
run by ``tests.support.nginx``): each variant here is a minimal reverse proxy
with one known mistake, for showing that ``connectome-sse doctor`` finds it
and names it. They run like the project's nginx (``NginxServer``'s prefix,
command and lifecycle), only the configuration differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.support.nginx import NginxServer, gateway_servers

# What every variant shares: one worker, logs to the prefix, a plain HTTP/1.1 proxy.
_CONFIG = """
worker_processes 1;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    upstream gateways {{ {servers} }}
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{directives}
        }}
    }}
}}
"""

# The classic mistakes: a buffering proxy that ignores the gateway's
# X-Accel-Buffering: no, and compression switched on for event streams.
BUFFERING_AND_GZIP = """
            proxy_buffering on;
            proxy_ignore_headers X-Accel-Buffering;
            gzip on;
            gzip_types text/event-stream;
            gzip_min_length 0;
"""

# A read timeout far below the gateway's ping interval: idle streams are cut.
SHORT_READ_TIMEOUT = """
            proxy_buffering off;
            proxy_read_timeout 5s;
"""


class NginxVariant(NginxServer):
    """Debian's nginx with one configuration above: HTTP on ``port``, HTTP/2 on ``tls_port``."""

    def __init__(self, gateways: Sequence[str], directives: str) -> None:
        super().__init__(gateways)
        self.directives = directives

    def write_config(self) -> Path:
        self.conf.write_text(
            _CONFIG.format(
                servers=gateway_servers(self.gateways),
                port=self.port,
                tls_port=self.tls_port,
                cert=self.tls.cert,
                key=self.tls.key,
                directives=self.directives,
            )
        )
        return self.conf
