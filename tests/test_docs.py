"""The documentation (README.md and docs/*.md) against the code it describes.

- Every relative link and anchor resolves (a page moved or a heading renamed breaks it).
- Every ``workbench ...`` command line in a fenced code block parses with the real argument
  parser (``workbench.cli.build_parser``): a renamed or removed option fails here.
- The examples that are side-effect free (``--help``, ``report --list``) are run, and exit 0.
- Every command the parser knows has a row in docs/commands.md.

The rules a page follows are in docs/development.md, "Command examples in the docs".
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import WORKBENCH, cli_env, isolated_settings

from workbench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A line ending in this comment is not parsed (an example that cannot be one: see the rules).
OPT_OUT = "# not checked"
#: Pictures are shown on GitHub's front page: kept small.
MAX_IMAGE_BYTES = 300 * 1024

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s+(\S+)", re.MULTILINE)
FENCE = re.compile(r"^(\s*)(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
REDIRECT = re.compile(r"\s\d?(>>|>|<)&?\s*\S+")
OPERATORS = re.compile(r"\s(?:&&|\|\||;|\|)\s")


@dataclass(frozen=True)
class Example:
    """A ``workbench`` command found in a page: where, the line as written, and its argv."""

    page: Path
    line: int
    text: str
    argv: tuple[str, ...]

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.text.strip()}"


def fenced_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced code block."""
    blocks, current, start, marker = [], None, 0, ""
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if current is None and m:
            current, start, marker = [], n + 1, m.group(2)
        elif current is not None and line.strip().startswith(marker):
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def prose(text: str) -> str:
    """The page without its fenced blocks and inline code (where links are not links)."""
    out, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        out.append("" if inside else INLINE_CODE.sub("", line))
    return "\n".join(out)


def workbench_commands(line: str) -> list[list[str]]:
    """The ``workbench`` invocations of one shell line: prompts, environment assignments,
    redirections and comments removed; ``a && b``, ``a | b`` and ``a; b`` split."""
    line = line.strip()
    if line.startswith("$ "):
        line = line[2:]
    found = []
    for part in OPERATORS.split(REDIRECT.sub(" ", f" {line} ")):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:  # an unbalanced quote in an output line
            continue
        while words and ENV.match(words[0]):
            words = words[1:]
        if not words:
            continue
        if words[0] == "workbench" or words[0].endswith("/workbench"):
            found.append(words[1:])
    return found


def examples() -> list[Example]:
    """Every ``workbench`` command line in the fenced blocks of the pages.

    In a block with ``$ `` prompts only the prompted lines are commands (the rest is their
    output); in a block without, every line is. A line continued with ``\\`` is joined with
    the next.
    """
    found = []
    for page in PAGES:
        for start, lines in fenced_blocks(page.read_text()):
            prompted = any(ln.lstrip().startswith("$ ") for ln in lines)
            joined: list[tuple[int, str]] = []
            for i, ln in enumerate(lines):
                if joined and joined[-1][1].endswith("\\"):
                    joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + ln.strip())
                else:
                    joined.append((start + i, ln))
            for n, ln in joined:
                if prompted and not ln.lstrip().startswith("$ "):
                    continue
                if ln.rstrip().endswith(OPT_OUT):
                    continue
                for argv in workbench_commands(ln):
                    found.append(Example(page, n, ln, tuple(argv)))
    return found


def parse_error(argv: tuple[str, ...]) -> str | None:
    """argparse's complaint about ``argv``, or None when the real parser takes it."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(list(argv))
        except SystemExit as exc:
            if exc.code not in (0, None):  # 0: --help
                return err.getvalue().strip().splitlines()[-1]
    return None


def side_effect_free(argv: tuple[str, ...]) -> bool:
    """An example the test may run anywhere: help, or the list of notebooks."""
    return "--help" in argv or "-h" in argv or (argv[:1] == ("report",) and "--list" in argv)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_fence:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = prose(page.read_text())
    return LINK.findall(text) + REFERENCE.findall(text)


# ---------------------------------------------------------------- the rules themselves


def test_finding_commands_in_shell_lines():
    assert workbench_commands("$ workbench tail raw --max 3") == [["tail", "raw", "--max", "3"]]
    assert workbench_commands(
        "0 2 * * *  cd /x && .venv/bin/workbench report --all >> reports/cron.log 2>&1"
    ) == [["report", "--all"]]
    assert workbench_commands("A=1 B='x y' workbench status   # comment") == [["status"]]
    assert workbench_commands("workbench a --b 1 && workbench c") == [["a", "--b", "1"], ["c"]]
    assert workbench_commands("workbench: error: rules my.toml: ...") == []
    assert workbench_commands("INFO workbench.metrics: serving") == []


def test_a_removed_option_is_caught():
    assert parse_error(("tail", "raw", "--max", "3")) is None
    assert "unrecognized arguments: --maximum" in parse_error(("tail", "raw", "--maximum", "3"))
    assert "invalid choice" in parse_error(("tale", "raw"))


def test_slugs_are_githubs():
    assert slug("Looking at the topics: workbench tail") == "looking-at-the-topics-workbench-tail"
    assert slug("The edge path (SQLite)") == "the-edge-path-sqlite"
    assert slug("Starting JupyterLab: `workbench lab`") == "starting-jupyterlab-workbench-lab"


# ---------------------------------------------------------------- the pages


def test_the_pages_have_command_examples():
    found = examples()
    assert len(found) >= 30, "the extraction found too few examples: is it still working?"
    assert {e.page.name for e in found} >= {"README.md", "commands.md", "lab.md", "storage.md"}


@pytest.mark.parametrize("example", examples(), ids=lambda e: f"{e.page.name}:{e.line}")
def test_every_command_example_parses(example: Example):
    error = parse_error(example.argv)
    assert error is None, f"{example.where()}\n  {error}"


@pytest.mark.slow
def test_the_side_effect_free_examples_run(tmp_path: Path):
    runnable = [e for e in examples() if side_effect_free(e.argv)]
    assert ("--help",) in {e.argv for e in runnable}
    assert any(e.argv[:1] == ("report",) for e in runnable)
    settings = isolated_settings(tmp_path / "state")
    for example in runnable:
        r = subprocess.run(
            [WORKBENCH, *example.argv],
            env=cli_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, f"{example.where()}\n{r.stderr}"
        assert r.stdout.strip(), example.where()


def test_every_command_has_a_row_in_the_command_table():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    table = (ROOT / "docs" / "commands.md").read_text()
    missing = [name for name in commands if f"| `workbench {name}" not in table]
    assert not missing, f"docs/commands.md has no row for: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no {file.relative_to(ROOT)}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_in_the_index():
    index = (ROOT / "docs" / "index.md").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert not [p for p in sorted(pages) if f"]({p})" not in index]


def test_pictures_are_small_and_used():
    images = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert images
    used = "".join(" ".join(links(p)) for p in PAGES)
    for image in images:
        assert image.stat().st_size <= MAX_IMAGE_BYTES, f"{image.name}: compress it"
        assert image.name in used, f"{image.name} is shown nowhere"
