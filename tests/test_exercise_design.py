"""What each chapter's exercises ask of the learner (issue: exercises that build the ideas).

- 4 to 6 graded exercises per chapter; each check says what kind it is (``kind=`` in
  ``llmbook.exercises.register``): at least three ``build`` (something the chapter explained
  but did not print), at most one ``formula``, and from chapter 2 on at least one
  ``experiment`` (the check runs the learner's code to a measured target, within 30 s).
- No answer is printed in its chapter: fewer than 60 % of a solution's lines (blank lines,
  comments and lone brackets dropped) may appear verbatim in the chapter's code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmbook.exercises import checks_for_chapter

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
VERBATIM_LIMIT = 0.6
EXPERIMENT_SECONDS = 30.0


def _code(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _meaningful(line: str) -> str | None:
    """A line as the comparison sees it: stripped; None for blanks, comments and lines of
    brackets and punctuation only, which every program shares."""
    text = line.strip()
    if not text or text.startswith("#") or re.fullmatch(r"[\s()\[\]{},:;]*", text):
        return None
    return text


def solution_blocks(path: Path) -> list[list[str]]:
    """The lines between each BEGIN SOLUTION and END SOLUTION marker of a notebook."""
    blocks: list[list[str]] = []
    for source in _code(path):
        current: list[str] | None = None
        for line in source.splitlines():
            if line.strip() == BEGIN:
                current = []
            elif line.strip() == END:
                if current is not None:
                    blocks.append(current)
                current = None
            elif current is not None:
                current.append(line)
    return blocks


def verbatim_share(block: list[str], chapter_lines: set[str]) -> float:
    lines = [m for m in map(_meaningful, block) if m is not None]
    if not lines:
        return 0.0
    return sum(line in chapter_lines for line in lines) / len(lines)


def test_the_share_counts_only_meaningful_lines() -> None:
    chapter = {"x = torch.zeros(3)", "return x"}
    block = ["    # a comment", "", "    x = torch.zeros(3)", "    )", "    y = x + 1"]
    assert verbatim_share(block, chapter) == 0.5
    assert verbatim_share(["    return x", "    ]"], chapter) == 1.0
    assert verbatim_share(["# only a comment"], chapter) == 0.0


@pytest.mark.parametrize("solutions", SOLUTIONS, ids=lambda p: p.stem)
def test_no_answer_is_printed_in_its_chapter(solutions: Path) -> None:
    chapter = ROOT / "chapters" / solutions.name
    chapter_lines = {
        m for source in _code(chapter) for m in map(_meaningful, source.splitlines()) if m
    }
    copied = []
    for block in solution_blocks(solutions):
        share = verbatim_share(block, chapter_lines)
        if share >= VERBATIM_LIMIT:
            first = next((m for m in map(_meaningful, block) if m), "")
            copied.append(f"{share:.0%} of the answer starting {first!r}")
    assert not copied, (
        f"{solutions.name}: these answers are printed in chapters/{chapter.name} (ask for "
        f"something the chapter explains but does not print): {copied}"
    )


@pytest.mark.parametrize("solutions", SOLUTIONS, ids=lambda p: p.stem)
def test_each_chapter_asks_for_builds_and_an_experiment(solutions: Path) -> None:
    number = int(solutions.name[:2])
    checks = checks_for_chapter(number)
    unkinded = [c.name for c in checks if c.kind is None]
    assert not unkinded, f"chapter {number}: say kind= when registering {unkinded}"
    kinds = [c.kind for c in checks]
    assert 4 <= len(checks) <= 6, f"chapter {number} has {len(checks)} exercises; ask 4 to 6"
    assert kinds.count("build") >= 3, f"chapter {number}: at least three builds, got {kinds}"
    assert kinds.count("formula") <= 1, f"chapter {number}: at most one formula, got {kinds}"
    if number >= 2:
        assert "experiment" in kinds, f"chapter {number}: add a measured experiment"
    slow = [c.name for c in checks if c.kind == "experiment" and c.time_limit > EXPERIMENT_SECONDS]
    assert not slow, f"chapter {number}: experiment checks over {EXPERIMENT_SECONDS} s: {slow}"
