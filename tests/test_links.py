"""Links into a chapter's sections (``../chapters/NN_slug.ipynb#section``) point at a heading
that exists, under the anchor the site gives it (``myst_heading_anchors`` in _config.yml,
GitHub-style slugs), so no exercise sends a learner to the top of the wrong page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from myst_parser.mdit_to_docutils.base import default_slugify

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("[ces]*/[0-9][0-9]_*.ipynb"))
LINK = re.compile(r"\]\((?:\.\./)?(chapters/[\w-]+\.ipynb)#([^)\s]+)\)")


def _markdown(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def anchors(path: Path, depth: int) -> set[str]:
    """The anchors of a notebook's headings down to ``depth`` (#, ##, ### for 3)."""
    found = set()
    for line in _markdown(path).splitlines():
        match = re.match(r"(#{1,6})\s+(.*)", line)
        if match and len(match.group(1)) <= depth:
            found.add(default_slugify(match.group(2).strip()))
    return found


def test_slugs_are_githubs() -> None:
    assert default_slugify("Generating text and the key/value cache") == (
        "generating-text-and-the-keyvalue-cache"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_section_links_point_at_a_heading(notebook: Path) -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    depth = config["sphinx"]["config"].get("myst_heading_anchors", 0)
    broken = []
    for target, anchor in LINK.findall(_markdown(notebook)):
        page = ROOT / target
        if not page.is_file() or anchor not in anchors(page, depth):
            broken.append(f"{target}#{anchor}")
    assert not broken, (
        f"{notebook.relative_to(ROOT)} links to sections that do not exist (or sit deeper "
        f"than myst_heading_anchors = {depth}): {broken}"
    )
