import pytest
import torch

from llmbook import GPT
from llmbook.config import (
    PRESETS,
    PUBLISHED_PARAMETERS,
    GPTConfig,
    count_parameters,
    parameter_breakdown,
)


def test_gpt2_has_exactly_124_439_808_parameters():
    assert count_parameters("gpt2") == 124_439_808


def test_gpt3_counts_about_175_billion_without_allocating(monkeypatch):
    # If counting built the model it would need 700 GB; make any allocation fail loudly.
    monkeypatch.setattr(torch.nn.Linear, "__init__", lambda *a, **k: pytest.fail("allocated a layer"))
    n = count_parameters("gpt3-175b")
    assert abs(n - 175e9) / 175e9 < 0.01
    cfg = GPTConfig.from_preset("gpt3-175b")
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions) == (96, 96, 12288, 2048)


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_gpt2_family_matches_published_sizes(name):
    assert abs(count_parameters(name) - PUBLISHED_PARAMETERS[name]) / PUBLISHED_PARAMETERS[name] < 0.04


@pytest.mark.parametrize("name", ["char-tiny", "char-small", "gpt2-mini"])
def test_count_matches_the_built_model(name):
    assert count_parameters(name) == GPT.from_preset(name).num_parameters()


def test_untied_head_adds_vocab_times_width():
    tied = GPTConfig.from_preset("char-small")
    untied = GPTConfig.from_preset("char-small", tie_word_embeddings=False)
    assert count_parameters(untied) - count_parameters(tied) == tied.vocab_size * tied.n_embd
    assert GPT(untied).num_parameters() == count_parameters(untied)


def meta_gpt(config: GPTConfig) -> GPT:
    """A GPT with the real module structure and no memory behind it (the meta device)."""
    with torch.device("meta"):
        return GPT(config)


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-xl", "gpt3-175b"])
def test_count_matches_the_parameters_of_the_built_model(name):
    # The formula against nn.Module's own count of a model built with the preset's shapes.
    assert count_parameters(name) == meta_gpt(PRESETS[name]).num_parameters()


def test_breakdown_matches_each_part_of_the_built_model():
    cfg = GPTConfig.from_preset("char-small", tie_word_embeddings=False)
    model = meta_gpt(cfg)
    size = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    blocks = list(model.h)
    actual = {
        "token embeddings (wte)": size([model.wte]),
        "position embeddings (wpe)": size([model.wpe]),
        "attention (all layers)": size(b.attn for b in blocks),
        "feed-forward (all layers)": size(b.mlp for b in blocks),
        "layer norms": size([model.ln_f] + [n for b in blocks for n in (b.ln_1, b.ln_2)]),
        "output head (lm_head)": size([model.lm_head]),
    }
    assert parameter_breakdown(cfg) == actual


def test_bad_shapes_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="positive"):
        GPTConfig(n_layer=0)
    with pytest.raises(KeyError, match="known presets"):
        GPTConfig.from_preset("gpt5")


def test_config_round_trips_through_dict():
    cfg = GPTConfig.from_preset("char-small", dropout=0.1)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GPTConfig fields"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_ctx": 3})
