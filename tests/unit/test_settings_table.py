"""docs/configuration.md's settings table is exactly the settings the code reads.

Every setting of the gateway and the publisher has one row, in the right process
column, with its real default; and every row names a setting that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectome_core.settings import ProcessSettings
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
HEADER = "| setting | process | default | meaning |"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([a-z]+) \| (.+?) \| (.+) \|$")
MODELS: dict[str, type[ProcessSettings]] = {
    "gateway": GatewaySettings,
    "publisher": PublisherSettings,
}


def table_rows() -> list[tuple[str, str, str, str]]:
    """The rows of the table under HEADER, up to the first line that is not a row."""
    lines = DOC.read_text().splitlines()
    assert lines.count(HEADER) == 1, f"{DOC.name} needs exactly one settings table"
    start = lines.index(HEADER) + 2  # past the header and its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match is not None, f"malformed settings row: {line}"
        rows.append((match[1], match[2], match[3], match[4]))
    return rows


def shown_default(cls: type[ProcessSettings], env: str) -> str:
    field = cls.model_fields[cls.env_names()[env]]
    default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    if isinstance(default, list):
        default = ",".join(default)
    return "(empty)" if default == "" else f"`{default}`"


def expected_process(env: str) -> str:
    readers = [name for name, cls in MODELS.items() if env in cls.env_names()]
    return "both" if len(readers) == len(MODELS) else readers[0]


def test_the_table_parses_and_has_no_duplicates() -> None:
    names = [row[0] for row in table_rows()]
    assert names, "the settings table is empty"
    assert len(names) == len(set(names)), "a setting has two rows"


@pytest.mark.parametrize("process", sorted(MODELS))
def test_every_setting_has_a_row_with_its_default(process: str) -> None:
    cls = MODELS[process]
    rows = {name: (proc, default) for name, proc, default, _ in table_rows()}
    for env in cls.env_names():
        assert env in rows, f"{env} missing from {DOC.name}'s settings table"
        proc, default = rows[env]
        assert proc == expected_process(env), f"{env}: the table says {proc}"
        shown = shown_default(cls, env)
        assert default == shown, f"{env}: {DOC.name} says {default}, code says {shown}"


def test_every_row_is_a_setting_of_the_code() -> None:
    known = {env for cls in MODELS.values() for env in cls.env_names()}
    stale = [name for name, *_ in table_rows() if name not in known]
    assert not stale, f"rows for settings no process reads: {stale}"
