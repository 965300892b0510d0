"""llmbook.widgets.SamplingPlayground (chapter 8): builds, redraws and samples without a browser."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from llmbook.config import GPTConfig
from llmbook.generate import filtered_probs, generate
from llmbook.model import GPT
from llmbook.tokenizers import ByteTokenizer
from llmbook.widgets import SamplingPlayground


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=ByteTokenizer.n_vocab, n_positions=64, n_embd=16, n_layer=1, n_head=2)
    m = GPT(config).eval()
    with torch.no_grad():  # a peaked distribution, so that cuts and temperature visibly matter
        m.lm_head.weight.mul_(40)
    return m


def _logits(model: GPT, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ByteTokenizer().encode(text)]))[0][0, -1]


def test_builds_with_prompt_and_three_sliders_and_draws_once(model: GPT) -> None:
    pg = SamplingPlayground(model, ByteTokenizer(), prompt="Hello", max_new_tokens=10)
    labels = [c.description for c in pg.widget.children[1].children]
    assert labels == ["temperature", "top-k (0: off)", "top-p (1: off)"]
    assert pg.prompt.value == "Hello"
    assert isinstance(pg.text, str) and pg.text
    bars = pg.figure.axes[0].patches
    assert len(bars) == 2 * pg.n_bars  # the model's distribution and the sampled-from one, side by side
    assert "Next token after 'Hello'" in pg.figure.axes[0].get_title()


def test_distribution_matches_llmbook_generate_filtered_probs(model: GPT) -> None:
    pg = SamplingPlayground(model, ByteTokenizer(), prompt="abc", max_new_tokens=5)
    pg.show(temperature=0.7, top_k=5, top_p=0.9)
    raw, used = pg.distribution()
    logits = _logits(model, "abc")
    torch.testing.assert_close(raw, torch.softmax(logits, -1))
    torch.testing.assert_close(used, filtered_probs(logits, 0.7, 5, 0.9))
    assert int((used > 0).sum()) <= 5
    assert pg.settings() == {"temperature": 0.7, "top_k": 5, "top_p": 0.9}


def test_greedy_is_one_token_and_the_sample_matches_generate(model: GPT) -> None:
    tok = ByteTokenizer()
    pg = SamplingPlayground(model, tok, prompt="abc", max_new_tokens=8)
    pg.show(temperature=0.0)
    _, used = pg.distribution()
    assert used.sum() == 1 and used.max() == 1 and int(used.argmax()) == int(_logits(model, "abc").argmax())
    expected = generate(model, [tok.encode("abc")], 8)[0][3:]
    assert pg.text == tok.decode(expected)
    assert "greedy" in pg.figure.axes[0].get_title()


def test_slider_changes_redraw_and_seeded_samples_repeat(model: GPT) -> None:
    pg = SamplingPlayground(model, ByteTokenizer(), prompt="abc", max_new_tokens=12)
    first = pg.text

    def title() -> str:
        return pg.figure.axes[0].get_title()

    pg.temperature.value = 1.5
    assert "temperature 1.50" in title()  # the figure shows the new setting
    pg.temperature.value = 1.0
    assert pg.text == first  # same settings and seed: the same text
    renders: list[int] = []
    original = pg.render
    pg.render = lambda: (renders.append(1), original())[1]  # type: ignore[method-assign]
    pg.show(top_k=3, seed=1)  # two controls, one redraw
    assert len(renders) == 1
    _, used = pg.distribution()
    assert int((used > 0).sum()) == 3


def test_a_long_prompt_keeps_its_end_and_bad_lengths_are_refused(model: GPT) -> None:
    pg = SamplingPlayground(model, ByteTokenizer(), prompt="x" * 200 + "end", max_new_tokens=10,
                            context_length=32)
    assert len(pg._prompt_ids()) == 22 and bytes(pg._prompt_ids()[-3:]) == b"end"
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingPlayground(model, ByteTokenizer(), max_new_tokens=64)
