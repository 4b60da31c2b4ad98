"""`connectome-sse token`, `listen --token` and the auth line of `up`'s banner."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from connectome_core.tokens import TokenError, TokenVerifier
from connectome_sse import cli
from connectome_sse.stack.banner import StackView, render

SECRET = "k" * 32


def run_token(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    status = cli.main(["token", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_token_prints_a_verifiable_token_alone_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSE_AUTH_SECRET", SECRET)
    status, out, err = run_token(
        ["--events", "a,b", "--ttl", "90", "--sub", "ops"], monkeypatch, capsys
    )
    assert status == 0 and err == ""
    assert out.count("\n") == 1
    grant = TokenVerifier(SECRET.encode()).verify(out.strip())
    assert grant.sub == "ops" and grant.events == frozenset({"a", "b"})
    with pytest.raises(TokenError, match="signature"):
        TokenVerifier(b"x" * 32).verify(out.strip())


@pytest.mark.parametrize(("secret", "says"), [(None, "not set"), ("short", "at least 32 bytes")])
def test_token_without_a_good_secret_says_so_in_one_line(
    secret: str | None,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if secret is None:
        monkeypatch.delenv("SSE_AUTH_SECRET", raising=False)
    else:
        monkeypatch.setenv("SSE_AUTH_SECRET", secret)
    status, out, err = run_token([], monkeypatch, capsys)
    assert status == 2 and out == ""
    assert says in err and err.count("\n") == 1
    if secret:
        assert secret not in err


@pytest.mark.parametrize("argv", [["--ttl", "0"], ["--ttl", "soon"], ["--events", "a b"]])
def test_token_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["token", *argv])
    assert info.value.code == 2


def test_listen_sends_the_token_as_a_bearer_header(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, json={"error": "token expired", "status": 401})

    real_client = httpx.Client

    def client(**kwargs: object) -> httpx.Client:
        return real_client(transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx, "Client", client)
    status = cli.main(["listen", "http://127.0.0.1:9", "--token", "abc.def.ghi"])
    assert status == 1
    assert seen == ["Bearer abc.def.ghi"]


def test_banner_says_how_to_switch_auth_on_and_how_to_use_it() -> None:
    view = StackView("http://127.0.0.1:8000", "redis", ["gw"], "/tmp/x")
    off = render(view)
    assert "SSE_AUTH_SECRET=" in off and "auth" in off
    on = render(dataclasses.replace(view, auth="SSE_AUTH_SECRET"))
    assert "connectome-sse token" in on
    assert (
        'Authorization: Bearer $(connectome-sse token --sub me)" http://127.0.0.1:8000/api/sse'
        in on
    )
