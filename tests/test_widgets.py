"""llmbook.widgets: the attention explorer builds and redraws without a browser or kernel."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")

from llmbook.widgets import AttentionExplorer, attention_explorer


def _maps() -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    torch.manual_seed(0)
    weights = {
        "first": torch.softmax(torch.randn(2, 3, 4, 4), dim=-1),
        "second": torch.softmax(torch.randn(2, 3, 5, 5), dim=-1),
    }
    tokens = {"first": list("abcd"), "second": ["x", " ", "\n", "y", "z"]}
    return weights, tokens


@pytest.fixture
def drawings(monkeypatch) -> list[str]:
    """The title of every attention map the explorer draws, in order."""
    import llmbook.widgets

    drawn: list[str] = []
    real = llmbook.widgets.plot_attention

    def spy(*args, **kwargs):
        drawn.append(kwargs.get("title"))
        return real(*args, **kwargs)

    monkeypatch.setattr(llmbook.widgets, "plot_attention", spy)
    return drawn


def _shown(explorer: AttentionExplorer) -> np.ndarray:
    (ax,) = [a for a in explorer.figure.axes if a.images]
    return np.asarray(ax.images[0].get_array())


def test_importing_the_module_does_not_import_ipywidgets() -> None:
    code = "import sys, llmbook.widgets; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_explorer_builds_with_three_dropdowns_and_draws_the_first_map(drawings) -> None:
    weights, tokens = _maps()
    explorer = attention_explorer(weights, tokens)
    assert [c.description for c in explorer.widget.children[0].children] == ["sentence", "layer", "head"]
    assert list(explorer.layer.options) == [0, 1] and list(explorer.head.options) == [0, 1, 2]
    np.testing.assert_allclose(_shown(explorer), weights["first"][0, 0].numpy(), rtol=1e-6)
    assert drawings == ["first: layer 0, head 0"]


def test_changing_a_dropdown_redraws_the_selected_head(drawings) -> None:
    weights, tokens = _maps()
    explorer = AttentionExplorer(weights, tokens)
    explorer.head.value = 2
    np.testing.assert_allclose(_shown(explorer), weights["first"][0, 2].numpy(), rtol=1e-6)
    explorer.layer.value = 1
    np.testing.assert_allclose(_shown(explorer), weights["first"][1, 2].numpy(), rtol=1e-6)
    explorer.sentence.value = "second"
    np.testing.assert_allclose(_shown(explorer), weights["second"][1, 2].numpy(), rtol=1e-6)
    ax = next(a for a in explorer.figure.axes if a.images)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "␣", "↵", "y", "z"]
    assert ax.get_title() == "second: layer 1, head 2"
    assert drawings == ["first: layer 0, head 0", "first: layer 0, head 2", "first: layer 1, head 2",
                        "second: layer 1, head 2"]  # one drawing per change


def test_show_selects_from_code_with_one_redraw(drawings) -> None:
    weights, tokens = _maps()
    explorer = AttentionExplorer(weights, tokens)
    explorer.show("second", layer=1, head=0)
    assert (explorer.sentence.value, explorer.layer.value, explorer.head.value) == ("second", 1, 0)
    assert drawings == ["first: layer 0, head 0", "second: layer 1, head 0"]  # not one per dropdown
    torch.testing.assert_close(explorer.current(), weights["second"][1, 0])


def test_explorer_rejects_maps_that_do_not_fit_their_tokens() -> None:
    weights, tokens = _maps()
    with pytest.raises(ValueError, match="T = 3 tokens"):
        AttentionExplorer({"first": weights["first"]}, {"first": list("abc")})
    with pytest.raises(ValueError, match="same sentence names"):
        AttentionExplorer(weights, {"first": tokens["first"]})
