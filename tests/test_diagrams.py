"""The book's diagrams: every one a chapter draws exists, is well-formed SVG with alt text,
and keeps its text inside its boxes; every chapter has at least one."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from llmbook import diagrams
from llmbook.diagrams import Canvas, text_width

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
# chapters 1-13 each have at least one diagram (issue 14); later chapters may add theirs
ILLUSTRATED = [p for p in CHAPTERS if 1 <= int(p.name[:2]) <= 13]
SVG = "{http://www.w3.org/2000/svg}"
CALL = re.compile(r"\bdiagrams\.([A-Za-z_]\w*)\(")


def diagram_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code" and CALL.search("".join(c["source"]))]


def referenced() -> dict[str, list[str]]:
    """Diagram name -> the chapters whose code cells call it."""
    found: dict[str, list[str]] = {}
    for path in CHAPTERS:
        for cell in diagram_cells(path):
            for name in CALL.findall("".join(cell["source"])):
                found.setdefault(name, []).append(path.name)
    return found


def test_there_are_thirteen_chapters_to_illustrate():
    assert [p.name[:2] for p in ILLUSTRATED] == [f"{n:02d}" for n in range(1, 14)]


@pytest.mark.parametrize("path", ILLUSTRATED, ids=lambda p: p.name)
def test_every_chapter_draws_a_diagram_in_a_remove_input_cell(path):
    cells = diagram_cells(path)
    assert cells, f"{path.name} draws no diagram (diagrams.NAME() in a code cell)"
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        assert "remove-input" in tags, f"{path.name}: tag the diagram cell remove-input (the site shows the picture)"


def test_every_diagram_a_chapter_calls_exists_and_is_listed():
    names = referenced()
    assert names, "no chapter calls a diagram"
    missing = sorted(n for n in names if n not in diagrams.ALL or not callable(getattr(diagrams, n, None)))
    assert not missing, f"chapters call diagrams that do not exist: {missing} (in {[names[n] for n in missing]})"


@pytest.mark.parametrize("name", sorted(diagrams.ALL))
def test_diagram_is_well_formed_svg_with_alt_text_and_nothing_overflows(name):
    d = diagrams.ALL[name]()
    assert d.name == name
    assert len(d.alt.split()) >= 12, "alt text says what the picture shows, in a sentence or more"
    assert d.caption.strip()
    root = ET.fromstring(d.svg)  # raises on malformed XML
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img" and root.get("aria-label") == d.alt
    assert root.get("width") == "100%" and root.get("viewBox", "").startswith("0 0 ")
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == d.alt
    assert len(root.findall(f".//{SVG}text")) >= 3
    assert d.problems == (), "\n".join(d.problems)
    # legible at 700 px: no text smaller than 9.5 px once the picture is scaled to 700 px
    width = float(root.get("viewBox", "").split()[2])
    sizes = {float(t.get("font-size", "0")) for t in root.iter(f"{SVG}text")}
    assert min(sizes) * min(1.0, 700 / width) >= 9.5, f"text as small as {min(sizes)} is not legible at 700 px"


@pytest.mark.parametrize("name", sorted(diagrams.ALL))
def test_repr_html_is_a_figure_with_the_svg_role_alt_and_caption(name):
    d = diagrams.ALL[name]()
    html = d._repr_html_()
    figure = ET.fromstring(html)
    assert figure.tag == "figure"
    svg = figure.find(f"{SVG}svg")
    assert svg is not None and svg.get("role") == "img" and svg.get("aria-label") == d.alt
    caption = figure.find("figcaption")
    assert caption is not None and caption.text == d.caption
    assert 'role="img"' in html
    assert repr(d).startswith(f"<Diagram {name}: ") and len(repr(d)) < 100, "plain text: short, no SVG"


def test_save_writes_a_standalone_svg(tmp_path):
    d = diagrams.gpt_block()
    path = d.save(tmp_path / "block.svg")
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg" and root.find(f"{SVG}title").text == d.alt


def test_the_fit_check_reports_a_label_too_wide_for_its_box():
    c = Canvas("test", 400, 100)
    c.box(10, 10, 120, 40, "short")
    assert c.problems == []
    c.box(150, 50, 120, 40, "a label far too long for this box")
    assert len(c.problems) == 1 and "far too long" in c.problems[0] and "has 108" in c.problems[0]


def test_the_fit_check_reports_too_many_lines_and_text_off_the_picture():
    c = Canvas("test", 300, 100)
    c.box(10, 10, 200, 30, "one\ntwo\nthree")
    c.text(295, 50, "runs off the edge", anchor="start")
    assert any("height" in p for p in c.problems)
    assert any("leaves the 300×100 picture" in p for p in c.problems)


# Widths in px that headless Chromium measured (SVG getBBox) for text of the diagrams, in
# DejaVu Sans and DejaVu Sans Mono, the widest fonts of the stacks: (text, size, bold, mono).
MEASURED = [
    ("pretraining", 14, True, False, 89.03),
    ("embedding", 13, False, False, 73.53),
    ("input", 12, False, False, 31.16),
    ("→ dead", 14, False, False, 51.16),
    ("W", 15, False, False, 15.0),
    ("+", 18, False, False, 15.09),
    ("−∞", 10, False, False, 16.72),
    ("128", 13, False, False, 24.83),
    ("T", 16, False, True, 10.0),
    ("Q·Kᵀ / √d", 14, False, False, 61.47),
]


@pytest.mark.parametrize("text, size, bold, mono, measured", MEASURED)
def test_text_width_errs_wide_but_not_by_much(text, size, bold, mono, measured):
    estimate = text_width(text, size, bold=bold, mono=mono)
    assert measured <= estimate <= 1.25 * measured


def test_text_width_grows_with_characters_and_size():
    assert text_width("mmmm", 14) > text_width("iiii", 14)
    assert text_width("abcd", 28) == pytest.approx(2 * text_width("abcd", 14))
    assert text_width("abcd", 14, bold=True) > text_width("abcd", 14)


def test_a_diagram_without_alt_text_is_refused():
    c = Canvas("test", 100, 100)
    c.box(10, 10, 80, 40, "x")
    with pytest.raises(ValueError, match="alt text"):
        c.finish(alt="  ", caption="nothing")


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown kind"):
        Canvas("t", 100, 100).box(0, 0, 10, 10, kind="sparkly")
    with pytest.raises(ValueError, match="n_gpus"):
        diagrams.data_parallel_zero(n_gpus=16)
    with pytest.raises(ValueError, match="too many tokens"):
        diagrams.tokens_to_embeddings("a sentence far too long to draw as one row of tokens on the page")


def test_tokens_to_embeddings_shows_gpt2s_real_tokens():
    from llmbook.tokenizers import gpt2_tokenizer

    text = "The teacher taught the students."
    ids = gpt2_tokenizer().encode(text)
    d = diagrams.tokens_to_embeddings(text)
    assert ", ".join(map(str, ids)) in d.alt
    drawn = [t.text for t in ET.fromstring(d.svg).iter(f"{SVG}text")]
    assert all(str(i) in drawn for i in ids) and "␣teacher" in drawn


def test_training_loop_targets_are_the_inputs_shifted_by_one():
    d = diagrams.training_loop("The cat sat on the mat.", context=8)
    drawn = [t.text for t in ET.fromstring(d.svg).iter(f"{SVG}text")]
    # after the position numbers 0..7: the input row interleaved with the target row
    letters = [s for s in drawn if s is not None and len(s) == 1 and not s.isdigit()]
    xs, ys = letters[0::2], letters[1::2]
    assert "".join(xs) == "The␣cat␣" and "".join(ys) == "he␣cat␣s"


def _texts(d, *, right: bool | None = None) -> list[str]:
    """The drawn text of a diagram; with ``right``, only that half of the picture's."""
    root = ET.fromstring(d.svg)
    half = float(root.get("viewBox", "").split()[2]) / 2
    return [t.text or "" for t in root.iter(f"{SVG}text") if right is None or (float(t.get("x", "0")) >= half) == right]


def test_modern_block_draws_what_gptconfigs_options_build():
    """Each column of chapter 13's picture shows the parts the library builds for that config."""
    from llmbook import GPT, GPTConfig
    from llmbook.layers import SwiGLU

    small = dict(vocab_size=32, n_positions=16, n_embd=32, n_layer=1, n_head=8)
    gpt2 = GPT(GPTConfig(**small))
    llama = GPT(GPTConfig(**small, norm="rmsnorm", positions="rope", mlp="swiglu", n_kv_head=2, bias=False))
    d = diagrams.modern_block()
    for model, right in [(gpt2, False), (llama, True)]:
        drawn = _texts(d, right=right)
        joined = " ".join(drawn)
        block = model.h[0]
        for name, norm in [("ln_1", block.ln_1), ("ln_2", block.ln_2), ("ln_f", model.ln_f)]:
            assert f"{name}: {type(norm).__name__}" in drawn, (name, right)
        assert (model.wpe is not None) == ("wpe" in joined)
        assert isinstance(block.mlp, SwiGLU) == ("SiLU" in drawn and "GELU" not in drawn)
        assert (block.attn.n_kv_head < block.attn.n_head) == ("GQA" in joined)
        assert (model.config.positions == "rope") == ("RoPE" in joined)
        has_bias = any(n.endswith("bias") for n, _ in model.named_parameters())
        assert has_bias == ("no biases anywhere (bias=False)" not in drawn)


def test_grouped_query_attention_groups_query_heads_as_the_library_does():
    """Query head i is drawn joined to key/value head i // (n_head // n_kv_head), the head that
    ``repeat_interleave`` in llmbook.attention gives it, and each cache is drawn to scale."""
    import torch

    for n_kv_head in (2, 4):
        root = ET.fromstring(diagrams.grouped_query_attention(n_kv_head).svg)
        lines = [
            [tuple(map(float, pt.split(","))) for pt in p.get("points", "").split()]
            for p in root.iter(f"{SVG}polyline")
        ]
        panels = [lines[i * 8 : (i + 1) * 8] for i in range(3)]
        assert len(lines) == 24
        for panel, h_kv in zip(panels, (8, n_kv_head, 1), strict=True):
            kv_x = sorted({end[0] for _, end in panel})
            drawn = [kv_x.index(end[0]) for _, end in sorted(panel)]
            expected = torch.arange(h_kv).repeat_interleave(8 // h_kv).tolist()
            assert drawn == expected, (h_kv, drawn)
        keys = [t for t in root.iter(f"{SVG}text") if t.text == "k"]
        assert len(keys) == 8 + n_kv_head + 1
        assert f"1/{8 // n_kv_head} of the multi-head cache" in _texts(diagrams.grouped_query_attention(n_kv_head))
    with pytest.raises(ValueError, match="n_kv_head"):
        diagrams.grouped_query_attention(3)
