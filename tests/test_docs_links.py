"""Every relative link in README.md and docs/*.md resolves: the file exists and a #anchor names
one of its headings (GitHub's anchor rules); every image under docs/img is used somewhere."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or ')'
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def prose_lines(text: str):
    """The lines outside fenced code blocks (links in code are not links)."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text()):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path):
    for line in prose_lines(path.read_text()):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            yield target


def test_slug_follows_github():
    assert slug("Reading a sweep's result") == "reading-a-sweeps-result"
    assert slug("Structure x precision: on the demo") == "structure-x-precision-on-the-demo"
    assert slug("mt5-base: distillation over 250,112 tokens, and a 24 GB GPU") == (
        "mt5-base-distillation-over-250112-tokens-and-a-24-gb-gpu"
    )


def test_the_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](other.md) [bad](#nope)\n```\n[x](y.md)\n```\n")
    assert list(relative_links(page)) == ["#title", "other.md", "#nope"]
    assert anchors(page) == {"title"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO)}")
            continue
        if anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_docs_index_lists_every_page():
    listed = set(relative_links(REPO / "docs" / "index.md"))
    pages = [p.name for p in PAGES if p.parent.name == "docs" and p.name != "index.md"]
    assert pages
    missing = [name for name in pages if name not in listed]
    assert not missing, f"docs/index.md does not list {missing}"


def test_every_image_is_used():
    text = "\n".join(p.read_text() for p in PAGES)
    unused = [p.name for p in sorted((REPO / "docs" / "img").iterdir()) if p.name not in text]
    assert not unused, f"images referenced by no page: {unused}"


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300
