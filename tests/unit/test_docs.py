"""The documentation stays honest: links resolve, tables match the code, no private references.

Cheap checks on README.md, ARCHITECTURE.md, docs/*.md and bench/HISTORY.md: every
relative link points at a file (and a heading) that exists; the ACL table of
docs/redis.md is the rules the tests run each process with; nothing cites
documents a clone does not have; the README stays short and names the command CI runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.redis_acl import GATEWAY, RULES

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "bench" / "HISTORY.md", *DOCS]
# Pages other branches are writing; linked already, absent until they are merged.
# Once one exists here, remove it from this set.
PENDING: set[str] = set()

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
# The team's private documents by name, and numbered tickets (written in pieces so
# that a grep of the tree for them finds nothing here).
PRIVATE = re.compile(
    r"\b(S[P]EC|S[T]YLE)(\.md)?\b|\b[Ii]ssue [0-9]|\b[Ii]tem [0-9]|\b(this|last) round\b"
)
# Files outside the pages that must not cite them either.
SOURCES = [
    ROOT / ".ci" / "run",
    *sorted((ROOT / "scripts").iterdir()),
    *sorted((ROOT / "bench").glob("*.py")),
]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose(path: Path) -> str:
    """The page without its code blocks (a shell example is not a link)."""
    return FENCE.sub("", path.read_text())


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", prose(path), re.M)}


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        name = rel(path) if path.is_relative_to(ROOT) else str(path)
        if name in PENDING and not path.exists():
            continue
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {name}")
    assert not broken, f"{rel(page)}: {broken}"


def test_pending_pages_are_still_pending() -> None:
    here = sorted(name for name in PENDING if (ROOT / name).exists())
    assert not here, f"{here} exist now: remove them from PENDING in {rel(Path(__file__))}"


@pytest.mark.parametrize("path", [*PAGES, *SOURCES], ids=rel)
def test_no_reference_to_documents_a_clone_does_not_have(path: Path) -> None:
    found = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found, f"{rel(path)} cites what a clone does not have: {found}"


def acl_rows() -> dict[str, list[str]]:
    """docs/redis.md's ACL table: process column -> the rule's tokens."""
    text = (ROOT / "docs" / "redis.md").read_text()
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\| (.+?) \| (.+) \|$", line)
        if match is None or match[1] in ("process", "---"):
            continue
        rule = match[2].replace("\\|", "|")
        rows[match[1]] = " ".join(re.findall(r"`([^`]+)`", rule)).split()
        if rule.startswith("the gateway's rule and"):
            rows[match[1]] = [*GATEWAY, *rows[match[1]]]
    return rows


def test_the_acl_table_is_the_rules_the_tests_run_with() -> None:
    rows = acl_rows()
    label = {
        "gateway": "gateway",
        "gateway_auth": "gateway with `SSE_AUTH_SECRET`",
        "publisher": "publisher",
        "cli_publish": "`connectome-sse publish`",
        "demo_engine": "`connectome-sse demo-engine`",
        "fcall_publish": "another program publishing through the log (`FCALL sse_publish`, "
        "[event-log.md](event-log.md))",
    }
    assert set(label) == set(RULES), "a process's rule has no row in docs/redis.md"
    for process, row in label.items():
        assert rows.get(row) == list(RULES[process]), f"docs/redis.md's {row} row"


def test_the_readme_is_short_and_names_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    assert "scripts/up" in readme and "scripts/test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec scripts/test\b", ci, re.M), "CI runs the README's test command"
