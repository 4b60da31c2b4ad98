"""`connectome-sse chaos` refuses what it cannot run in one line, before starting anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connectome_sse.chaos.topology import Settings, chaos_topology
from connectome_sse.cli import main, parse
from connectome_sse.commands.chaos import chosen
from connectome_sse.localrun.nginx import TemplateNotFound, find_template


def test_an_unknown_scenario_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chaos", "redis-kill", "no-such-fault"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-fault" in err[0] and "redis-kill" in err[0]


def test_a_bad_setting_stops_it_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSE_RETRY_MS", "soon")
    assert main(["chaos", "redis-kill"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SSE_RETRY_MS" in err[0]


def test_a_missing_nginx_template_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nginx.conf.template"
    assert main(["chaos", "redis-kill", "--nginx-template", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "editable install" in err
    with pytest.raises(TemplateNotFound):
        find_template(missing)


def test_the_repository_template_is_found_from_the_editable_install() -> None:
    assert find_template().name == "nginx.conf.template"


def test_default_is_every_scenario_but_the_soak_and_the_storm_takes_its_own_count() -> None:
    args = parse(["chaos", "--storm-clients", "123"])
    scenarios, soak = chosen(args)
    assert not soak
    names = [s.name for s in scenarios]
    assert "redis-kill" in names and "sentinel-failover" in names and "storm" in names
    (storm,) = [s for s in scenarios if s.name == "storm"]
    assert storm.clients == 123
    _, soak = chosen(parse(["chaos", "--soak"]))
    assert soak
    only, soak = chosen(parse(["chaos", "soak"]))
    assert only == [] and soak


def test_the_topologys_ping_comes_from_the_settings_model_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings handed in decide, not a second read of the environment."""
    monkeypatch.setenv("SSE_PING_INTERVAL", "99")
    settings = Settings.from_environ({"SSE_PING_INTERVAL": "7"})
    topology = chaos_topology(settings)
    try:
        assert topology.gateway_env["SSE_PING_INTERVAL"] == "7.0"
    finally:
        shutil.rmtree(topology.workdir, ignore_errors=True)


def test_the_chaos_redis_keeps_its_data_through_a_kill() -> None:
    """redis-kill restarts it on the same files: the log is still there for the gateways."""
    topology = chaos_topology(Settings.from_environ({}))
    try:
        args = topology.redis.command()
        # redis-server takes the last value of a repeated option.
        last = len(args) - 1 - args[::-1].index("--appendonly")
        assert args[last + 1] == "yes"
        assert args[args.index("--appendfsync") + 1] == "always"
        assert args[args.index("--dir") + 1] == str(topology.redis.workdir)
    finally:
        shutil.rmtree(topology.workdir, ignore_errors=True)
