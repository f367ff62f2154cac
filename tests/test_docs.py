"""The documentation stays whole: it lives in this repository (``docs/``), nothing
points outside it, every relative Markdown link resolves (anchors included), and
every ``docs/`` page that code names exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Pointers to documents outside the repository (built here so that this file
#: does not hold them itself).
FORBIDDEN = ("../" + "shared", "DESIGN" + ".md")

#: The Markdown files whose links must resolve.
LINKED_FILES = ("README.md", "DEVELOPERS.md", "bench/README.md")

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
#: ``[text](target)`` and ``![alt](target)``; the target may be in angle brackets
#: and followed by a title.
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
#: ``[label]: target`` reference definitions.
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
#: A docs page named in code: ``docs/…/name.md``.
_DOCS_PAGE = re.compile(r"docs/[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md")


def tracked_files() -> list[Path]:
    """The files ``git ls-files`` lists that exist in the working tree."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    result = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"not a git checkout: {result.stderr.decode(errors='replace').strip()}")
    paths = [ROOT / name for name in result.stdout.decode("utf-8").split("\0") if name]
    return [path for path in paths if path.is_file()]


def markdown_files() -> list[Path]:
    return [ROOT / name for name in LINKED_FILES] + sorted((ROOT / "docs").glob("*.md"))


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks, code spans blanked."""
    lines, fence = [], None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        lines.append(_CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line))
    return lines


def link_targets(text: str) -> list[str]:
    targets = []
    for line in prose_lines(text):
        targets += [m.group(1) for m in _INLINE_LINK.finditer(line)]
        targets += [m.group(1) for m in _REFERENCE.finditer(line)]
    return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for t in targets]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, formatting and punctuation
    dropped, lower case, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(ch for ch in text
                   if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, …)."""
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path) -> list[str]:
    """What is wrong with the relative links of one Markdown file."""
    problems = []
    where = path.relative_to(ROOT)
    for target in link_targets(path.read_text(encoding="utf-8")):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # a web address
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        try:
            resolved.relative_to(ROOT)
        except ValueError:
            problems.append(f"{where}: {target} points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: {target} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: {target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    return problems


def test_no_tracked_file_points_outside_the_repository():
    found = []
    for path in tracked_files():
        content = path.read_bytes()
        found += [f"{path.relative_to(ROOT)}: {word}" for word in FORBIDDEN if word.encode() in content]
    assert not found, "the documentation is in docs/; replace these pointers:\n" + "\n".join(found)


def test_every_relative_markdown_link_resolves():
    files = markdown_files()
    missing = [str(path.relative_to(ROOT)) for path in files if not path.is_file()]
    assert not missing, f"Markdown files to check are missing: {missing}"
    problems = [problem for path in files for problem in broken_links(path)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_page_named_in_code_exists():
    named = {}
    for path in tracked_files():
        if path.suffix in (".py", ".js"):
            for page in _DOCS_PAGE.findall(path.read_text(encoding="utf-8", errors="replace")):
                named.setdefault(page, []).append(str(path.relative_to(ROOT)))
    missing = {page: users for page, users in named.items() if not (ROOT / page).is_file()}
    assert not missing, f"code names docs pages that do not exist: {missing}"


def test_the_docs_index_links_every_page():
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in link_targets(index.read_text(encoding="utf-8"))
              if not _SCHEME.match(t)}
    pages = {p.resolve() for p in (ROOT / "docs").glob("*.md")} - {index.resolve()}
    unlisted = sorted(str(p.relative_to(ROOT)) for p in pages - linked)
    assert not unlisted, f"docs/README.md does not link these pages: {unlisted}"


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Behind nginx", "behind-nginx"),
    ("Resuming chunks", "resuming-chunks"),
    ("`sse-chat ask` options", "sse-chat-ask-options"),
    ("Memory or Redis", "memory-or-redis"),
    ("GET /v1/models", "get-v1models"),
    ("[Link](x.md) text", "link-text"),
])
def test_slug_follows_githubs_anchors(heading, anchor):
    assert slug(heading) == anchor


def test_links_in_code_are_not_links():
    text = "see [a](one.md)\n\n```\n[b](two.md)\n```\n\n`[c](three.md)` and ![d](<four five.png> \"t\")\n[e]: six.md\n"
    assert link_targets(text) == ["one.md", "four five.png", "six.md"]
