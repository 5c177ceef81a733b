"""Every relative link in README.md and docs/**/*.md resolves: to a file, and to a heading.

Links are Markdown inline links ``[text](target)`` outside code fences and code spans.
External links (``https:``, ``mailto:``, ...) are not fetched. A ``#anchor`` must name a
heading of the target Markdown file, slugged as GitHub does (lower case, punctuation
dropped, spaces to hyphens, ``-1``, ``-2`` for repeats).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass(frozen=True)
class Link:
    """One link: the file and line it is on, and its target."""

    source: Path
    line: int
    target: str


def prose_lines(text: str) -> list[tuple[int, str]]:
    """Return (line number, line) for every line outside code fences."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def links(path: Path) -> list[Link]:
    """Return the inline links of a Markdown file (code fences and code spans skipped)."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(_CODE_SPAN.sub("", line)):
            found.append(Link(path, number, match.group(1)))
    return found


def slug(heading: str) -> str:
    """Return GitHub's anchor for a heading's text (before the repeat suffix)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Return every heading anchor of a Markdown file."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def problem(link: Link, root: Path = REPO) -> str | None:
    """Return why a relative link does not resolve, or None when it does (or is external)."""
    if _SCHEME.match(link.target):
        return None
    path_part, _, anchor = link.target.partition("#")
    target = (link.source.parent / path_part).resolve() if path_part else link.source
    where = f"{link.source.relative_to(root)}:{link.line}: ({link.target})"
    if not target.exists():
        return f"{where} names a file that does not exist; fix the path"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"{where} names no heading of {target.name}; use one of its headings' anchors"
    return None


def test_every_relative_link_resolves() -> None:
    all_links = [link for doc in DOCS for link in links(doc)]
    problems = [p for link in all_links if (p := problem(link))]
    assert not problems, "\n".join(problems)
    relative = [link for link in all_links if not _SCHEME.match(link.target)]
    assert len(relative) >= 20, f"only {len(relative)} relative links found: is the parser broken?"


def test_the_guides_exist_and_are_linked_from_the_readme() -> None:
    readme = {link.target.partition("#")[0] for link in links(REPO / "README.md")}
    for guide in ("user-guide.md", "operator-guide.md", "maintainer-guide.md"):
        assert (REPO / "docs" / guide).is_file()
        assert f"docs/{guide}" in readme, f"README.md does not link docs/{guide}"


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("The workload file: `config.ini`", "the-workload-file-configini"),
        (
            "The CI stage: `jpo suggest` and `jpo feedback`",
            "the-ci-stage-jpo-suggest-and-jpo-feedback",
        ),
        ("The .jpo/ folder and what to commit", "the-jpo-folder-and-what-to-commit"),
        ("The CI stage's pipeline", "the-ci-stages-pipeline"),
        ("Kubernetes: KubeRay, Docker", "kubernetes-kuberay-docker"),
        ("test_tiers and [a link](x.md)", "test_tiers-and-a-link"),
    ],
)
def test_slug_matches_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_broken_links_and_anchors_are_reported(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    (tmp_path / "other.md").write_text("# Other\n\n## Part two\n\n## Part two\n", encoding="utf-8")
    doc.write_text(
        "# Doc\n\n"
        "[ok](other.md#part-two) [ok too](other.md#part-two-1) [self](#doc)\n"
        "[gone](missing.md) [bad anchor](other.md#part-three) [web](https://example.org/x)\n"
        "`[code](missing-too.md)`\n\n```\n[fenced](missing-three.md)\n```\n",
        encoding="utf-8",
    )
    found = links(doc)
    assert [link.target for link in found] == [
        "other.md#part-two",
        "other.md#part-two-1",
        "#doc",
        "missing.md",
        "other.md#part-three",
        "https://example.org/x",
    ]
    bad = [link.target for link in found if problem(link, root=tmp_path)]
    assert bad == ["missing.md", "other.md#part-three"]
