"""Write the learners' ``exercises/`` notebooks from the reference ``solutions/``.

``solutions/NN_slug.ipynb`` is the single source of truth. In its code cells, the lines
from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` (inclusive) become one line,
``raise NotImplementedError("Write your solution here")``, at the marker's indentation,
so a function keeps its signature and docstring and only loses its body. Lines from
``### BEGIN HIDDEN TESTS`` to ``### END HIDDEN TESTS`` are dropped entirely: that is
where a solutions notebook asserts its own checks pass, which would only stop a learner's
"Run all" at the first unfinished exercise. (Both marker pairs are nbgrader's, so an
instructor can also use nbgrader on the same files.) Outputs and execution counts are
cleared; all metadata is kept.

The output is deterministic (nbformat 4 JSON, ``indent=1``, sorted keys, a trailing
newline), so regenerating gives identical bytes and a test can catch drift::

    python tools/make_exercises.py           # (re)write exercises/*.ipynb
    python tools/make_exercises.py --check   # exit 1 and list files that are out of date

It needs nothing but the standard library, and it is a tool of this repository, not part
of the ``llmbook`` package that learners install.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
STUB = 'raise NotImplementedError("Write your solution here")'
ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python tools/make_exercises.py"

_PAIRS = {BEGIN_SOLUTION: END_SOLUTION, BEGIN_HIDDEN: END_HIDDEN}
_ENDS = {end: begin for begin, end in _PAIRS.items()}


class MarkerError(ValueError):
    """A solutions notebook has an unbalanced or nested marker; nothing is written."""


def _source_text(source: str | list[str]) -> str:
    return "".join(source) if isinstance(source, list) else source


def strip_solutions(source: str, where: str = "cell") -> str:
    """The exercise version of one code cell's source (see the module docstring)."""
    out: list[str] = []
    open_marker: str | None = None
    indent = ""
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        marker = line.strip()
        if marker in _PAIRS:
            if open_marker is not None:
                raise MarkerError(f"{where}, line {number}: {marker!r} inside {open_marker!r}")
            open_marker = marker
            indent = line[: len(line) - len(line.lstrip())]
        elif marker in _ENDS:
            if open_marker != _ENDS[marker]:
                raise MarkerError(
                    f"{where}, line {number}: {marker!r} without a matching {_ENDS[marker]!r}"
                )
            if open_marker == BEGIN_SOLUTION:
                ending = line[len(line.rstrip("\r\n")) :]
                out.append(f"{indent}{STUB}{ending}")
            open_marker = None
        elif open_marker is None:
            out.append(line)
    if open_marker is not None:
        raise MarkerError(f"{where}: {open_marker!r} is never closed")
    result = "".join(out)
    # A dropped block at the very end must not leave a dangling newline behind.
    return result if source.endswith("\n") else result.rstrip("\n")


def _split_lines(text: str) -> list[str]:
    """Source as nbformat stores it on disk: a list of lines, each keeping its newline."""
    return text.splitlines(keepends=True)


def make_exercise(solution: dict[str, Any], name: str = "notebook") -> dict[str, Any]:
    """The exercise notebook (as a JSON-ready dict) for a solutions notebook dict."""
    nb = copy.deepcopy(solution)
    for index, cell in enumerate(nb.get("cells", [])):
        source = _source_text(cell.get("source", ""))
        if cell.get("cell_type") == "code":
            source = strip_solutions(source, where=f"{name}, cell {index}")
            cell["outputs"] = []
            cell["execution_count"] = None
        cell["source"] = _split_lines(source)
    return nb


def dumps(nb: dict[str, Any]) -> str:
    """Serialise a notebook the way nbformat writes v4 files, with a trailing newline."""
    text = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False, separators=(",", ": "))
    return text if text.endswith("\n") else text + "\n"


def render(solution_path: Path) -> str:
    """The exact text ``exercises/<same name>`` should have for this solutions notebook."""
    solution = json.loads(solution_path.read_text(encoding="utf-8"))
    return dumps(make_exercise(solution, name=solution_path.name))


def main(argv: list[str] | None = None) -> int:
    """Command line: regenerate, or with ``--check`` only report what is out of date."""
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Generate exercises/*.ipynb from solutions/*.ipynb.",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="repository root (default: the one this tool is in)")
    args = parser.parse_args(argv)

    solutions_dir, exercises_dir = args.root / "solutions", args.root / "exercises"
    if not solutions_dir.is_dir():
        parser.error(f"no solutions/ folder under {args.root.resolve()}")
    stale: list[str] = []
    written: list[str] = []
    for solution_path in sorted(solutions_dir.glob("*.ipynb")):
        target = exercises_dir / solution_path.name
        try:
            text = render(solution_path)
        except (MarkerError, ValueError) as err:
            print(f"error: {solution_path}: {err}", file=sys.stderr)
            return 1
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(target))
        else:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="")
            written.append(str(target))
    orphans = sorted(
        str(p) for p in exercises_dir.glob("*.ipynb") if not (solutions_dir / p.name).is_file()
    )
    for orphan in orphans:
        print(f"warning: {orphan} has no solutions/ notebook it is generated from",
              file=sys.stderr)
    if args.check:
        stale.extend(orphans)
        if stale:
            print(f"out of date (run `{COMMAND}`):")
            for path in stale:
                print(f"  {path}")
            return 1
        print("exercises/ is up to date with solutions/")
        return 0
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("exercises/ was already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
