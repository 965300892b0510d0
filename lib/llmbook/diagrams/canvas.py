"""The drawing primitives behind ``llmbook.diagrams``: one style, plain SVG text out.

A ``Canvas`` collects shapes (rounded boxes, arrows with heads, grids of cells, captioned
groups, free labels) in the book's palette and font, and ``Canvas.finish`` turns them into a
``Diagram``. Every piece of text is recorded with the room it was given, so
``Diagram.problems`` can say when a label is too wide for its box or runs off the picture:
the tests assert that list is empty for every diagram in the book.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, 'DejaVu Sans', sans-serif"
MONO = "ui-monospace, 'SFMono-Regular', Menlo, Consolas, 'DejaVu Sans Mono', monospace"
INK = "#1f2933"  # text
LINE = "#52606d"  # arrows and outlines of neutral things
MUTED = "#7b8794"

# kind -> (fill, stroke): a small palette, the same meaning in every chapter
PALETTE: dict[str, tuple[str, str]] = {
    "data": ("#fdf0dc", "#b7791f"),  # text, tokens, ids, logits: what flows in and out
    "layer": ("#e3edfb", "#3a6db5"),  # learned layers
    "attn": ("#e3f4e8", "#2f8a4c"),  # attention
    "norm": ("#efe7fa", "#7a4fb5"),  # layer norms
    "stream": ("#fbe5e3", "#c0392b"),  # the residual stream, losses, targets
    "frozen": ("#eef0f2", "#7b8794"),  # frozen weights, masked cells
    "plain": ("#ffffff", "#52606d"),
}

LINE_HEIGHT = 1.25  # in font sizes
PAD = 6.0  # room left between a box's outline and its text, each side


def text_width(text: str, size: float, *, mono: bool = False, bold: bool = False) -> float:
    """An upper estimate of the width of ``text`` in pixels at font ``size``.

    The per-character widths are those of DejaVu Sans, the widest font of the stack
    (Arial and Roboto are narrower), so text that passes here fits in every browser.
    """
    if mono:
        return 0.63 * size * len(text)
    total = 0.0
    for ch in text:
        if ch in "ijl.,:;'|!`":
            w = 0.30
        elif ch in "frt()[]{}/\\ -":
            w = 0.40
        elif ch in "mwMW@%":
            w = 1.02
        elif ch in "+−∞×=<>~≻∑⊕#&":
            w = 0.84
        elif ch.isupper() or ch in "→←↑↓·":
            w = 0.76
        elif ch.isdigit():
            w = 0.64
        elif ord(ch) > 0x2E80:  # CJK and emoji
            w = 1.0
        else:
            w = 0.64
        total += w
    return total * size * (1.16 if bold else 1.0)


@dataclass(frozen=True)
class Diagram:
    """A finished picture: SVG text, alt text and a caption, shown inline by Jupyter.

    It renders as notebook output (``_repr_html_``), so it appears in Jupyter, in a notebook
    opened alone in Colab and on the book's site alike; ``save`` writes an .svg file.
    """

    name: str
    svg: str
    alt: str
    caption: str
    width: float
    problems: tuple[str, ...] = ()

    def __repr__(self) -> str:
        """Short, for plain-text displays (the picture itself is ``_repr_html_``)."""
        return f"<Diagram {self.name}: {self.alt[:60]}…>"

    def _repr_html_(self) -> str:
        caption = html.escape(self.caption)
        return (
            f'<figure class="llmbook-diagram" style="margin:1em auto;max-width:'
            f'{self.width:.0f}px">{self.svg}<figcaption style="font-family:{html.escape(FONT)};'
            f'font-size:0.9em;color:{INK};text-align:center;margin-top:0.4em">'
            f"{caption}</figcaption></figure>"
        )

    def save(self, path: str | Path) -> Path:
        """Write the SVG to ``path`` (a standalone .svg file) and return the path."""
        path = Path(path)
        path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + self.svg + "\n")
        return path


@dataclass
class Box:
    """Where a box was drawn, for attaching arrows to its sides."""

    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h


@dataclass
class Canvas:
    """A picture being drawn, ``width`` × ``height`` in SVG units (≈ pixels at full size)."""

    name: str
    width: float
    height: float
    parts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    # -- text ----------------------------------------------------------------------------
    def _check_inside(self, what: str, x0: float, y0: float, x1: float, y1: float) -> None:
        if x0 < -0.5 or y0 < -0.5 or x1 > self.width + 0.5 or y1 > self.height + 0.5:
            self.problems.append(
                f"{self.name}: {what} at ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}) "
                f"leaves the {self.width:.0f}×{self.height:.0f} picture"
            )

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: float = 14,
        anchor: str = "middle",
        colour: str = INK,
        bold: bool = False,
        mono: bool = False,
        italic: bool = False,
        max_width: float | None = None,
    ) -> None:
        """Lines of text (split at "\\n") centred vertically on ``y``; ``anchor``: start,
        middle or end, as in SVG. ``max_width`` is the room the text may take."""
        lines = text.split("\n")
        widest = max(text_width(line, size, mono=mono, bold=bold) for line in lines)
        if max_width is not None and widest > max_width:
            self.problems.append(
                f"{self.name}: {text!r} needs about {widest:.0f} px at size {size}, has {max_width:.0f}"
            )
        x0 = {"start": x, "middle": x - widest / 2, "end": x - widest}[anchor]
        top = y - len(lines) * size * LINE_HEIGHT / 2
        self._check_inside(repr(text), x0, top, x0 + widest, top + len(lines) * size * LINE_HEIGHT)
        style = f'font-family="{html.escape(FONT if not mono else MONO)}" font-size="{size:g}"'
        if bold:
            style += ' font-weight="bold"'
        if italic:
            style += ' font-style="italic"'
        for i, line in enumerate(lines):
            baseline = top + (i + 0.5) * size * LINE_HEIGHT + 0.35 * size
            self.parts.append(
                f'<text x="{x:.1f}" y="{baseline:.1f}" text-anchor="{anchor}" fill="{colour}" '
                f"{style}>{html.escape(line)}</text>"
            )

    # -- shapes --------------------------------------------------------------------------
    def box(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        text: str = "",
        *,
        kind: str = "layer",
        size: float = 14,
        mono: bool = False,
        bold: bool = False,
        dashed: bool = False,
        radius: float = 8,
    ) -> Box:
        """A rounded box in the colours of ``kind`` with centred text that must fit inside."""
        if kind not in PALETTE:
            raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(PALETTE)}")
        fill, stroke = PALETTE[kind]
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        self._check_inside("box", x, y, x + w, y + h)
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{radius:g}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
        )
        if text:
            n_lines = text.count("\n") + 1
            if n_lines * size * LINE_HEIGHT > h:
                self.problems.append(
                    f"{self.name}: {text!r} needs {n_lines * size * LINE_HEIGHT:.0f} px of "
                    f"height at size {size}, the box has {h:.0f}"
                )
            self.text(x + w / 2, y + h / 2, text, size=size, mono=mono, bold=bold, max_width=w - 2 * PAD)
        return Box(x, y, w, h)

    def group(
        self, x: float, y: float, w: float, h: float, caption: str, *, size: float = 13, colour: str = MUTED
    ) -> Box:
        """A dashed frame around related shapes, its caption at the top left, inside."""
        self._check_inside("group", x, y, x + w, y + h)
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="12" '
            f'fill="none" stroke="{colour}" stroke-width="1.2" stroke-dasharray="6 4"/>'
        )
        self.text(
            x + 10,
            y + 4 + size * LINE_HEIGHT / 2,
            caption,
            size=size,
            anchor="start",
            colour=colour,
            bold=True,
            max_width=w - 20,
        )
        return Box(x, y, w, h)

    def circle(self, cx: float, cy: float, r: float, text: str = "", *, kind: str = "plain", size: float = 16) -> Box:
        """A small circle, e.g. the ⊕ where a branch is added back to the stream."""
        fill, stroke = PALETTE[kind]
        self._check_inside("circle", cx - r, cy - r, cx + r, cy + r)
        self.parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:g}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
        )
        if text:
            self.text(cx, cy, text, size=size, colour=stroke, max_width=2 * r)
        return Box(cx - r, cy - r, 2 * r, 2 * r)

    def line(
        self,
        points: list[tuple[float, float]],
        *,
        colour: str = LINE,
        width: float = 1.5,
        dashed: bool = False,
        head: bool = True,
    ) -> None:
        """A polyline through ``points``, with an arrowhead at the last point if ``head``."""
        if len(points) < 2:
            raise ValueError("a line needs at least two points")
        for px, py in points:
            self._check_inside("line", px, py, px, py)
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        (x1, y1), (x2, y2) = points[-2], points[-1]
        length = math.hypot(x2 - x1, y2 - y1)
        if length == 0:
            raise ValueError("the last segment of a line has no length")
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        size = 4 + 2.5 * width
        end = (x2 - ux * size * 0.8, y2 - uy * size * 0.8) if head else (x2, y2)
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in [*points[:-1], end])
        self.parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" '
            f'stroke-width="{width:g}" stroke-linejoin="round"{dash}/>'
        )
        if head:
            bx, by = x2 - ux * size, y2 - uy * size
            left = (bx - uy * size * 0.5, by + ux * size * 0.5)
            right = (bx + uy * size * 0.5, by - ux * size * 0.5)
            self.parts.append(
                f'<polygon points="{x2:.1f},{y2:.1f} {left[0]:.1f},{left[1]:.1f} '
                f'{right[0]:.1f},{right[1]:.1f}" fill="{colour}"/>'
            )

    def arrow(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        *,
        colour: str = LINE,
        width: float = 1.5,
        dashed: bool = False,
    ) -> None:
        """A straight arrow from (x1, y1) to (x2, y2)."""
        self.line([(x1, y1), (x2, y2)], colour=colour, width=width, dashed=dashed)

    def rect(
        self, x: float, y: float, w: float, h: float, fill: str, *, stroke: str = "none", radius: float = 2
    ) -> None:
        """A plain filled rectangle (bars, swatches), no text."""
        self._check_inside("rect", x, y, x + w, y + h)
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{radius:g}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1"/>'
        )

    def polygon(self, points: list[tuple[float, float]], *, kind: str = "layer") -> None:
        """A filled outline through ``points`` (the trapezoids of an encoder, of LoRA's A, B)."""
        fill, stroke = PALETTE[kind]
        for px, py in points:
            self._check_inside("polygon", px, py, px, py)
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        self.parts.append(
            f'<polygon points="{coords}" fill="{fill}" stroke="{stroke}" stroke-width="1.5" stroke-linejoin="round"/>'
        )

    def grid(
        self,
        x: float,
        y: float,
        cells: list[list[tuple[str, str]]],
        *,
        cell: float = 24,
        size: float = 11,
        mono: bool = False,
    ) -> Box:
        """A matrix of square cells; ``cells[i][j]`` is (fill colour, text) of row i, column j."""
        rows, cols = len(cells), len(cells[0]) if cells else 0
        if rows == 0 or cols == 0 or any(len(r) != cols for r in cells):
            raise ValueError("a grid needs equal, non-empty rows")
        for i, row in enumerate(cells):
            for j, (fill, text) in enumerate(row):
                cx, cy = x + j * cell, y + i * cell
                self.parts.append(
                    f'<rect x="{cx:.1f}" y="{cy:.1f}" width="{cell:g}" height="{cell:g}" '
                    f'fill="{fill}" stroke="#ffffff" stroke-width="1.5"/>'
                )
                if text:
                    self.text(cx + cell / 2, cy + cell / 2, text, size=size, mono=mono, max_width=cell - 2)
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{cols * cell:g}" height="{rows * cell:g}" '
            f'fill="none" stroke="{LINE}" stroke-width="1"/>'
        )
        self._check_inside("grid", x, y, x + cols * cell, y + rows * cell)
        return Box(x, y, cols * cell, rows * cell)

    # -- the result ----------------------------------------------------------------------
    def finish(self, alt: str, caption: str) -> Diagram:
        """The finished ``Diagram``; ``alt`` says what the picture shows, for screen readers."""
        if not alt.strip():
            raise ValueError("a diagram needs alt text that says what it shows")
        title_id = f"llmbook-{self.name}-title"
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width:g} '
            f'{self.height:g}" width="100%" role="img" aria-label="{html.escape(alt)}" '
            f'aria-labelledby="{title_id}" style="max-width:{self.width:g}px;height:auto;'
            f'display:block;margin:0 auto;background:#ffffff">'
            f'<title id="{title_id}">{html.escape(alt)}</title>'
            f'<rect width="{self.width:g}" height="{self.height:g}" fill="#ffffff"/>' + "".join(self.parts) + "</svg>"
        )
        return Diagram(self.name, svg, alt, caption, self.width, tuple(self.problems))
