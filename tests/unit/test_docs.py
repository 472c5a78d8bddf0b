"""README.md is the entry and docs/ the manual: every link between them lands, and the entry stays short."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250
# A newcomer reads this far before scrolling; the two commands must be there.
README_HEAD_LINES = 10

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`]+`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose(markdown: str) -> str:
    """The text links and headings are read from: code blocks and code spans hold neither."""
    return _INLINE_CODE.sub("", _FENCE.sub("", markdown))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> Iterator[str]:
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if not _SCHEME.match(target):
            yield target


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{target}: no such heading in {linked.relative_to(ROOT)}")
    return broken


def test_the_manual_exists_as_pages_under_docs() -> None:
    # Given the repository
    # When the manual is looked for
    pages = sorted(page.name for page in DOCS.glob("*.md"))
    # Then docs/ holds it, starting with the page samconfig.toml sends deployers to
    assert "deploying.md" in pages


@pytest.mark.parametrize("page", _pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading(page: Path) -> None:
    # Given a page of the README or the manual
    # When its relative links are followed
    broken = broken_links(page)
    # Then each reaches an existing file, and a heading of it where the link names one
    assert broken == []


def test_the_readme_is_an_entry_that_names_the_two_commands_first() -> None:
    # Given the README
    lines = README.read_text(encoding="utf-8").splitlines()
    # When its length and its first lines are read
    head = "\n".join(lines[:README_HEAD_LINES])
    # Then it stays short, and a newcomer meets `make demo` and `make test` before anything else
    assert len(lines) < README_MAX_LINES
    assert "make demo" in head
    assert "make test" in head


def test_the_readme_links_every_page_of_the_manual_and_each_page_links_back() -> None:
    # Given the README and the pages under docs/
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in relative_links(README)}
    # When each page is looked for among the README's links, and the README among the page's first lines
    unlinked = [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked]
    without_way_back = [
        page.name
        for page in DOCS.glob("*.md")
        if "(../README.md)" not in "\n".join(page.read_text(encoding="utf-8").splitlines()[:5])
    ]
    # Then no page is orphaned, and every page leads back to the entry
    assert unlinked == []
    assert without_way_back == []


def test_the_files_that_cite_a_docs_page_cite_one_that_exists() -> None:
    # Given the configuration and CI files that send readers to docs/
    citing = [ROOT / "samconfig.toml", ROOT / "Makefile", ROOT / ".ci" / "run"]
    # When the docs/ paths they name are looked up
    cited = {match for path in citing for match in re.findall(r"docs/[\w-]+\.md", path.read_text(encoding="utf-8"))}
    missing = sorted(path for path in cited if not (ROOT / path).exists())
    # Then every one of them is there
    assert "docs/deploying.md" in cited
    assert missing == []


def test_a_heading_slugs_as_github_slugs_it() -> None:
    # Given headings with punctuation, code and a repeat
    markdown = "# Backfill (historical migration)\n## The `crr` CLI\n## Limits\n## Limits\n```\n# not a heading\n```\n"
    # When their anchors are computed
    found = anchors(markdown)
    # Then they are GitHub's, and the fenced line is none
    assert found == {"backfill-historical-migration", "the-crr-cli", "limits", "limits-1"}
