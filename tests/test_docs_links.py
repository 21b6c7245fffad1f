"""Every relative link in README.md and docs/*.md reaches an existing file, and every ``#anchor``
an existing heading of the page it names (GitHub's heading ids)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", flags=re.MULTILINE)


def prose(text: str) -> str:
    """The page without its fenced code blocks, where `#` lines and brackets are code."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's id for a heading: the rendered text lower-cased, punctuation dropped (letters,
    digits, spaces, hyphens and underscores stay), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id of ``page``; a repeated heading gets ``-1``, ``-2``... as on GitHub."""
    seen: Counter[str] = Counter()
    ids = set()
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        ids.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return ids


def links(page: Path) -> list[str]:
    """The relative link targets of ``page``'s prose (web, mail and protocol links left out)."""
    text = INLINE_CODE.sub("", prose(page.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def test_slug_follows_github() -> None:
    """The slug rules on headings shaped like the docs' own."""
    assert slug("Under a root path or a mount") == "under-a-root-path-or-a-mount"
    assert slug("The `secmw` command") == "the-secmw-command"
    assert slug("`rate_limit`") == "rate_limit"
    assert slug("The default policy (for APIs)") == "the-default-policy-for-apis"
    assert slug("Failed attempts: charged before they are checked") == (
        "failed-attempts-charged-before-they-are-checked"
    )
    assert slug("Token families: logout and refresh-token reuse") == (
        "token-families-logout-and-refresh-token-reuse"
    )


def test_checker_sees_broken_links(tmp_path: Path) -> None:
    """A missing file and a missing heading are both reported, code blocks are skipped."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## A `b` c\n\n[ok](#a-b-c) [gone](#nope) [file](other.md)\n\n"
        "```sh\n# not a heading\n[not](a-link.md)\n```\n",
        encoding="utf-8",
    )
    assert anchors(page) == {"title", "a-b-c"}
    assert links(page) == ["#a-b-c", "#nope", "other.md"]


def test_pages_exist() -> None:
    """The README and the documentation index are among the pages checked."""
    assert PAGES[0].is_file()
    assert ROOT / "docs" / "README.md" in PAGES


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    """Each relative link names an existing file, and its anchor an existing heading there."""
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / unquote(path)).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT)}")
        elif fragment and (file.suffix != ".md" or unquote(fragment) not in anchors(file)):
            broken.append(f"{target}: no heading #{fragment} in {file.relative_to(ROOT)}")
    assert broken == [], f"{page.relative_to(ROOT)}: broken links"
