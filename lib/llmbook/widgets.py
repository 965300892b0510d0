"""Small interactive apps for a live notebook (introduced in chapter 5).

``AttentionExplorer`` lets a reader pick a sentence, a layer and a head from three
dropdowns and see that head's attention map. The maps are computed beforehand (see
``llmbook.viz.collect_attention``), so the explorer needs no model and redraws
instantly. Widgets are interactive only in a running kernel; on the published website
a chapter shows a static figure beside it.

ipywidgets is imported inside the functions, so importing this module has no side
effects and does not need a notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from llmbook.viz import plot_attention


class AttentionExplorer:
    """Dropdowns for sentence, layer and head above one attention map.

    ``weights`` maps a sentence's name to its maps, a (n_layer, n_head, T, T) tensor;
    ``tokens`` maps the same name to its T token strings. Display the explorer (or its
    ``widget``) in a notebook cell. Changing a dropdown redraws ``figure`` and refreshes
    the output area; ``show`` does the same from code.
    """

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        tokens: Mapping[str, Sequence[str]],
        panel_size: float = 6.0,
    ) -> None:
        import ipywidgets as widgets
        from matplotlib.figure import Figure

        if not weights:
            raise ValueError("give the attention maps of at least one sentence")
        if set(weights) != set(tokens):
            raise ValueError("weights and tokens must have the same sentence names as keys")
        self.weights = {name: torch.as_tensor(w).detach().float().cpu() for name, w in weights.items()}
        self.tokens = {name: list(t) for name, t in tokens.items()}
        for name, w in self.weights.items():
            if w.dim() != 4 or w.shape[-1] != w.shape[-2] or w.shape[-1] != len(self.tokens[name]):
                raise ValueError(
                    f"weights[{name!r}] should be (n_layer, n_head, T, T) with T = "
                    f"{len(self.tokens[name])} tokens, got shape {tuple(w.shape)}"
                )
        first = next(iter(self.weights.values()))
        n_layer, n_head = first.shape[0], first.shape[1]
        self.sentence = widgets.Dropdown(options=list(self.weights), description="sentence")
        self.layer = widgets.Dropdown(options=list(range(n_layer)), value=0, description="layer")
        self.head = widgets.Dropdown(options=list(range(n_head)), value=0, description="head")
        self.output = widgets.Output()
        self.figure = Figure(figsize=(panel_size + 1.2, panel_size))
        self.widget = widgets.VBox([widgets.HBox([self.sentence, self.layer, self.head]), self.output])
        for control in (self.sentence, self.layer, self.head):
            control.observe(self._on_change, names="value")
        self.draws = 0
        self.render()

    def current(self) -> torch.Tensor:
        """The (T, T) map that the dropdowns select."""
        return self.weights[self.sentence.value][self.layer.value, self.head.value]

    def render(self) -> None:
        """Redraw the figure for the current selection and show it in the output area."""
        self.figure.clear()
        ax = self.figure.add_subplot()
        plot_attention(
            self.current(),
            self.tokens[self.sentence.value],
            ax=ax,
            title=f"{self.sentence.value}: layer {self.layer.value}, head {self.head.value}",
        )
        self.figure.tight_layout()
        self.draws += 1
        self._refresh_output()

    def show(self, sentence: str | None = None, layer: int | None = None, head: int | None = None) -> None:
        """Select a sentence, layer and head from code (the dropdowns follow)."""
        updates = {"sentence": sentence, "layer": layer, "head": head}
        self._batch = True  # one redraw at the end, not one per dropdown
        try:
            for name, value in updates.items():
                if value is not None:
                    getattr(self, name).value = value
        finally:
            self._batch = False
        self.render()

    _batch = False

    def _on_change(self, change: dict[str, Any]) -> None:
        if not self._batch:
            self.render()

    def _refresh_output(self) -> None:
        """Put the figure into the output area, when there is a kernel to send it to."""
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython comes with ipywidgets
            return
        if get_ipython() is None:  # plain Python (tests, scripts): nothing to display into
            return
        self.output.clear_output(wait=True)
        with self.output:
            display(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def attention_explorer(
    weights: Mapping[str, torch.Tensor], tokens: Mapping[str, Sequence[str]]
) -> AttentionExplorer:
    """An ``AttentionExplorer`` for these maps: display it in a cell to use it."""
    return AttentionExplorer(weights, tokens)


__all__ = ["AttentionExplorer", "attention_explorer"]
