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


class _FigureApp:
    """What every app here shares: controls that redraw one figure in an output area.

    A subclass builds ``self.widget`` (the whole app), ``self.output`` (where the figure
    goes) and ``self.figure``, and implements ``render()``.
    """

    _batch = False
    widget: Any  # ipywidgets.VBox: the whole app
    output: Any  # ipywidgets.Output: where the figure goes
    figure: Any  # matplotlib Figure

    def render(self) -> None:  # pragma: no cover - every app defines it
        raise NotImplementedError

    def _set_controls(self, updates: Mapping[str, Any]) -> None:
        """Set the named controls (``None`` leaves one alone), then redraw once, not once per control."""
        self._batch = True
        try:
            for name, value in updates.items():
                if value is not None:
                    getattr(self, name).value = value
        finally:
            self._batch = False
        self.render()

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


class AttentionExplorer(_FigureApp):
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
        self._refresh_output()

    def show(self, sentence: str | None = None, layer: int | None = None, head: int | None = None) -> None:
        """Select a sentence, layer and head from code (the dropdowns follow)."""
        self._set_controls({"sentence": sentence, "layer": layer, "head": head})


def attention_explorer(
    weights: Mapping[str, torch.Tensor], tokens: Mapping[str, Sequence[str]]
) -> AttentionExplorer:
    """An ``AttentionExplorer`` for these maps: display it in a cell to use it."""
    return AttentionExplorer(weights, tokens)


__all__ = ["AttentionExplorer", "attention_explorer"]


class SamplingPlayground(_FigureApp):
    """A prompt box and sliders for temperature, top-k and top-p (introduced in chapter 8).

    The figure shows the model's next-token distribution for the prompt twice: as the
    model gives it (temperature 1, nothing cut) and as the sliders reshape it, the
    distribution that sampling actually draws from; below it, a continuation sampled with
    those settings. Moving a slider redraws both, so a reader sees what each knob does to
    the distribution and what that does to the text.

    ``model`` is an ``llmbook.model.GPT``; ``tokenizer`` has ``encode`` and ``decode``
    (``ByteTokenizer``, tiktoken's GPT-2). ``context_length`` caps prompt plus
    continuation (default: the model's ``n_positions``; pass the length a model was
    trained on if that is shorter). Temperature 0 means greedy; top-k 0 and top-p 1 mean
    "no cut". ``show(...)`` sets the controls from code with one redraw.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompt: str = "The ",
        max_new_tokens: int = 60,
        context_length: int | None = None,
        n_bars: int = 20,
        seed: int = 0,
    ) -> None:
        import ipywidgets as widgets
        from matplotlib.figure import Figure

        self.model = model
        self.tokenizer = tokenizer
        self.context_length = int(context_length or model.config.n_positions)
        if not 0 < max_new_tokens < self.context_length:
            raise ValueError(
                f"max_new_tokens must be between 1 and {self.context_length - 1} (the context length "
                f"minus room for a prompt), got {max_new_tokens}"
            )
        self.max_new_tokens = max_new_tokens
        self.n_bars = n_bars
        vocab = int(model.config.vocab_size)
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                                   layout=widgets.Layout(width="60%"))
        self.temperature = widgets.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="temperature",
                                               continuous_update=False)
        self.top_k = widgets.IntSlider(value=0, min=0, max=min(vocab, 100), description="top-k (0: off)",
                                       continuous_update=False)
        self.top_p = widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p (1: off)",
                                         continuous_update=False)
        self.seed = widgets.IntText(value=seed, description="seed")
        self.output = widgets.Output()
        self.figure = Figure(figsize=(10, 5.4))
        self.widget = widgets.VBox([
            widgets.HBox([self.prompt, self.seed]),
            widgets.HBox([self.temperature, self.top_k, self.top_p]),
            self.output,
        ])
        for control in (self.prompt, self.temperature, self.top_k, self.top_p, self.seed):
            control.observe(self._on_change, names="value")
        self.text = ""
        self.render()


    def settings(self) -> dict[str, Any]:
        """The sampling arguments the controls stand for, as ``llmbook.generate`` takes them."""
        return {
            "temperature": float(self.temperature.value),
            "top_k": int(self.top_k.value) or None,
            "top_p": float(self.top_p.value) if self.top_p.value < 1.0 else None,
        }

    def _prompt_ids(self) -> list[int]:
        ids = list(self.tokenizer.encode(self.prompt.value)) or list(self.tokenizer.encode(" "))
        room = self.context_length - self.max_new_tokens
        return ids[-room:]  # keep the end of a long prompt: it is what the next token depends on

    def distribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the model's next-token probabilities, the ones sampling draws from) for the prompt.

        With temperature 0 the second is all on the most likely token: greedy decoding.
        """
        from llmbook.generate import filtered_probs

        device = next(self.model.parameters()).device
        idx = torch.tensor([self._prompt_ids()], device=device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits, _ = self.model(idx, last_only=True)
        finally:
            self.model.train(was_training)
        logits = logits[0, -1].float().cpu()
        raw = torch.softmax(logits, dim=-1)
        s = self.settings()
        if s["temperature"] == 0:
            used = torch.zeros_like(raw)
            used[int(logits.argmax())] = 1.0
        else:
            used = filtered_probs(logits, s["temperature"], s["top_k"], s["top_p"])
        return raw, used

    def sample(self) -> str:
        """A continuation of the prompt with the current settings (seeded, so repeatable)."""
        from llmbook.generate import generate

        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(int(self.seed.value))
        ids = self._prompt_ids()
        out = generate(self.model, [ids], self.max_new_tokens, generator=generator, **self.settings())[0]
        return self.tokenizer.decode(out[len(ids):])

    def _token_label(self, token_id: int) -> str:
        from llmbook.viz import readable_token

        try:
            text = self.tokenizer.decode([token_id])
        except Exception:
            text = f"#{token_id}"
        return readable_token(text) if text.isprintable() or text in (" ", "\n", "\t") else f"#{token_id}"

    def render(self) -> None:
        """Recompute the distributions and a sample for the current controls, and redraw."""
        import textwrap

        raw, used = self.distribution()
        self.text = self.sample()
        top = torch.topk(raw, min(self.n_bars, raw.numel())).indices
        xs = torch.arange(len(top)).float()
        s = self.settings()
        kept = int((used > 0).sum())
        entropy = float(-(used[used > 0] * used[used > 0].log2()).sum())

        self.figure.clear()
        ax, text_ax = self.figure.subplots(2, 1, gridspec_kw={"height_ratios": [3.2, 1]})
        ax.bar(xs - 0.2, raw[top].numpy(), width=0.4, color="#b0b0b0", label="model (temperature 1, no cut)")
        ax.bar(xs + 0.2, used[top].numpy(), width=0.4, color="#3060a0", label="after the sliders: sampled from")
        ax.set_xticks(xs.numpy(), [self._token_label(int(i)) for i in top])
        ax.set_xlabel(f"the {len(top)} most likely next tokens (by the model's own probabilities)")
        ax.set_ylabel("probability")
        mode = "greedy (temperature 0)" if s["temperature"] == 0 else (
            f"temperature {s['temperature']:.2f}, top-k {s['top_k'] or 'off'}, top-p {s['top_p'] or 'off'}")
        ax.set_title(f"Next token after {self.prompt.value[-40:]!r}: {mode}\n"
                     f"{kept} token(s) can be drawn; entropy {entropy:.2f} bits")
        ax.legend(loc="upper right")
        ax.grid(axis="y", alpha=0.3)
        text_ax.axis("off")
        def wrapped(label: str, text: str) -> str:
            text = "".join(c if c.isprintable() or c == "\n" else "·" for c in text)  # no invisible glyphs
            lines = textwrap.wrap(text.replace("\n", "↵ "), width=96, initial_indent=label,
                                  subsequent_indent=" " * len(label))
            return "\n".join(lines[:4]) or label

        text_ax.text(0.0, 1.0, wrapped("prompt:     ", self.prompt.value) + "\n"
                     + wrapped("sampled:    ", self.text) + f"\n(seed {self.seed.value})",
                     va="top", ha="left", family="monospace", fontsize=8.5)
        self.figure.tight_layout()
        self._refresh_output()

    def show(self, prompt: str | None = None, temperature: float | None = None, top_k: int | None = None,
             top_p: float | None = None, seed: int | None = None) -> None:
        """Set any of the controls from code, then redraw once."""
        self._set_controls({"prompt": prompt, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                            "seed": seed})


__all__ += ["SamplingPlayground"]


def plot_word_scores(ax: Any, scored: Sequence[tuple[str, float]], title: str, color: str = "#3060a0",
                     highlight: str | None = None) -> None:
    """Horizontal bars of (word, cosine similarity), best on top; ``highlight`` in orange."""
    words = [w for w, _ in scored][::-1]
    sims = [s for _, s in scored][::-1]
    ax.barh(range(len(words)), sims, color=[("#e07020" if w == highlight else color) for w in words])
    ax.set_yticks(range(len(words)), words)
    ax.set_xlim(min(0.0, *sims) if sims else 0.0, 1.0)
    ax.set_xlabel("cosine similarity")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)


class AnalogyExplorer(_FigureApp):
    """Word boxes for "a is to b as c is to ?" and for one word's neighbours (chapter 2).

    ``vectors`` holds one row per word of ``vocab`` (an ``llmbook.embeddings.Vocabulary``).
    Editing a box (press Enter) redraws ``figure``: on the left the ``k`` words nearest to
    b - a + c with the three query words left out, on the right the nearest neighbours of
    the fourth word. A word outside the vocabulary is reported in the panel's title.
    ``show(...)`` sets the boxes from code with one redraw.
    """

    def __init__(self, vectors: torch.Tensor, vocab: Any, a: str = "man", b: str = "king",
                 c: str = "woman", word: str = "ship", k: int = 10) -> None:
        import ipywidgets as widgets
        from matplotlib.figure import Figure

        if vectors.dim() != 2 or len(vectors) != len(vocab):
            raise ValueError(f"vectors should be ({len(vocab)}, dim), one row per vocabulary word; "
                             f"got shape {tuple(vectors.shape)}")
        self.vectors, self.vocab, self.k = vectors.detach().float().cpu(), vocab, k
        # Labels as wide as their words ("initial"), boxes of one width; the row wraps
        # on a narrow page (the book's column is about 690 px) instead of cutting a box off.
        def box(value: str, label: str) -> Any:
            return widgets.Text(value=value, description=label, continuous_update=False,
                                style={"description_width": "initial"},
                                layout=widgets.Layout(width="210px", margin="2px 12px 2px 0"))

        self.a, self.b, self.c = box(a, "a"), box(b, "is to b"), box(c, "as c")
        self.word = box(word, "neighbours of")
        self.output = widgets.Output()
        self.figure = Figure(figsize=(11, 4.2))
        row = widgets.HBox([self.a, self.b, self.c, self.word],
                           layout=widgets.Layout(flex_flow="row wrap"))
        self.widget = widgets.VBox([row, self.output])
        for control in (self.a, self.b, self.c, self.word):
            control.observe(self._on_change, names="value")
        self.render()


    def results(self) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """(answers to the analogy, neighbours of the word); empty where a word is unknown."""
        from llmbook.embeddings import analogy, nearest

        a, b, c, word = (box.value.strip().lower() for box in (self.a, self.b, self.c, self.word))
        answers = analogy(self.vectors, self.vocab, a, b, c, self.k) if all(
            w in self.vocab for w in (a, b, c)) else []
        neighbours = nearest(self.vectors, self.vocab, word, self.k) if word in self.vocab else []
        return answers, neighbours

    def render(self) -> None:
        """Recompute both lists for the current boxes and redraw."""
        answers, neighbours = self.results()
        a, b, c, word = (box.value.strip().lower() for box in (self.a, self.b, self.c, self.word))
        unknown = [w for w in (a, b, c) if w not in self.vocab]
        self.figure.clear()
        left, right = self.figure.subplots(1, 2)
        plot_word_scores(left, answers, f"{b} − {a} + {c} ≈ ?" if not unknown else
                         f"not in the vocabulary: {', '.join(repr(w) for w in unknown)}")
        plot_word_scores(right, neighbours, f"nearest neighbours of {word!r}" if neighbours else
                         f"{word!r} is not in the vocabulary", color="#609040")
        self.figure.tight_layout()
        self._refresh_output()

    def show(self, a: str | None = None, b: str | None = None, c: str | None = None,
             word: str | None = None) -> None:
        """Fill in any of the boxes from code, then redraw once."""
        self._set_controls({"a": a, "b": b, "c": c, "word": word})


__all__ += ["AnalogyExplorer", "plot_word_scores"]
