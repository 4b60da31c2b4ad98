"""The README's settings table names every setting with its real default (docs cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectome_core.settings import ProcessSettings
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `([A-Z_]+)` \| [a-z]+ \| (.+?) \| .+ \|$", re.M)


@pytest.mark.parametrize("cls", [GatewaySettings, PublisherSettings])
def test_every_setting_is_in_the_readme_with_its_default(cls: type[ProcessSettings]) -> None:
    rows = dict(ROW.findall(README.read_text()))
    for field in cls.model_fields.values():
        env = str(field.validation_alias)
        assert env in rows, f"{env} missing from README's settings table"
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        shown = "(empty)" if default in ([], "") else f"`{default}`"
        assert rows[env] == shown, f"{env}: README says {rows[env]}, code says {shown}"
