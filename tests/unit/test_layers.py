"""The packages' layers only point down: core <- services <- tools <- bench and tests.

Walks every import (top-level and inside functions) with ``ast``, so a lazy import
cannot hide an upward dependency either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lower number = lower layer. A module may import its own package and lower layers only.
LAYERS = {
    "connectome_core": 0,
    "sse_gateway": 1,
    "health_publisher": 1,
    "connectome_sse": 2,
    "bench": 3,
    "tests": 4,
}
# Two services are peers: neither imports the other.
PEERS = {("sse_gateway", "health_publisher"), ("health_publisher", "sse_gateway")}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


def modules() -> list[Path]:
    return sorted(
        path
        for package in LAYERS
        for path in (ROOT / package).rglob("*.py")
        if "results" not in path.parts and "run" not in path.parts
    )


def test_the_layers_are_all_there() -> None:
    assert all((ROOT / package).is_dir() for package in LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_its_own_or_a_peer_service(path: Path) -> None:
    own = path.relative_to(ROOT).parts[0]
    upward = sorted(
        other
        for other in imported_packages(path)
        if LAYERS[other] > LAYERS[own] or (own, other) in PEERS
    )
    assert upward == [], f"{path.relative_to(ROOT)} imports {upward} (layers point down)"
