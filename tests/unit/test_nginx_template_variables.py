"""Every path that renders services/nginx/nginx.conf.template gives every ``${LB_...}`` it holds.

compose's nginx service (with the image's ENV defaults), the tests'
``render_for`` and ``connectome-sse``'s local nginx: a variable one of them
forgets stops nginx at start, which a docker-free run would not show for
compose. The real renders run in tests/e2e (nginx -t and real traffic).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from connectome_sse.localrun import nginx as localrun_nginx
from tests.support.nginx import TEMPLATE, render_for, template_variables

REPO = Path(__file__).resolve().parents[2]
HOLE = re.compile(r"\$\{LB_[A-Z_]+\}")


def image_defaults() -> set[str]:
    dockerfile = (REPO / "services" / "nginx" / "Dockerfile").read_text()
    env_lines = re.findall(r"^ENV ((?:.*\\\n)*.*)$", dockerfile, re.M)
    return {name for line in env_lines for name in re.findall(r"\b(LB_[A-Z_]+)=", line)}


def test_compose_sets_every_template_variable_and_a_stream_limit() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env = {str(k): str(v) for k, v in compose["services"]["nginx"]["environment"].items()}
    assert template_variables() <= set(env) | image_defaults()
    assert env["LB_STREAMS_PER_CLIENT"] == "100"


def test_the_test_and_local_renders_fill_every_variable(tmp_path: Path) -> None:
    rendered = render_for(8080, ["127.0.0.1:8001"], 8443, tmp_path / "c", tmp_path / "k")
    assert not HOLE.search(rendered)
    assert "limit_conn sse_per_client 65535;" in rendered
    values = localrun_nginx.template_values(8080, 8443, tmp_path / "c", tmp_path / "k", ["a:1"])
    assert not HOLE.search(localrun_nginx.render(TEMPLATE.read_text(), values))


def test_compose_leaves_no_forwarded_address_to_the_client() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    assert "$proxy_add_x_forwarded_for" not in TEMPLATE.read_text()
    assert not re.search(r"FORWARDED_ALLOW_IPS:\s*[\"']?\*", compose)


def test_ticket_requests_are_rate_limited_per_address_by_nginx() -> None:
    template = TEMPLATE.read_text()
    # POSTs keyed by the client's address; other methods have an empty key (not counted).
    assert re.search(
        r"map \$request_method \$sse_ticket_client \{\s*POST \$binary_remote_addr;", template
    )
    assert re.search(
        r"limit_req_zone \$sse_ticket_client zone=sse_tickets:\S+ rate=60r/m;", template
    )
    assert "limit_req_status 429;" in template
    ticket = re.search(r"location = /api/sse/ticket \{(.*?)\}", template, re.S)
    assert ticket is not None
    assert re.search(r"limit_req zone=sse_tickets burst=\d+ nodelay;", ticket.group(1))
    assert "proxy_set_header" not in ticket.group(1)  # keeps the server's X-Forwarded-For
