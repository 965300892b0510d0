import math

import pytest
import torch

from llmbook import GPT, GPTConfig
from llmbook.model import IGNORE_INDEX

TINY = GPTConfig(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def test_gpt2_module_names():
    names = {n for n, _ in GPT(TINY).named_parameters()}
    for expected in ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight",
                     "h.0.attn.c_proj.bias", "h.1.mlp.c_fc.weight", "h.1.mlp.c_proj.weight", "ln_f.bias"]:
        assert expected in names


def test_weights_are_tied():
    m = GPT(TINY)
    assert m.lm_head.weight.data_ptr() == m.wte.weight.data_ptr()


def test_gpt2_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=500, n_positions=64, n_embd=256, n_layer=8, n_head=4))
    assert m.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert m.h[0].attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert m.h[0].attn.c_attn.bias.abs().max().item() == 0.0


def test_untrained_loss_is_near_uniform():
    torch.manual_seed(0)
    m = GPT(TINY).eval()
    x, y = torch.randint(0, 50, (2, 4, 16))
    logits, loss = m(x, y)
    assert logits.shape == (4, 16, 50)
    assert loss.item() == pytest.approx(math.log(50), rel=0.05)


def test_model_is_causal():
    torch.manual_seed(0)
    m = GPT(TINY).eval()
    x = torch.randint(0, 50, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 50
    a, _ = m(x)
    b, _ = m(y)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_explicit_and_fused_attention_agree():
    torch.manual_seed(0)
    fused = GPT(TINY).eval()
    explicit = GPT(GPTConfig(**{**TINY.to_dict(), "attn_impl": "explicit"})).eval()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randint(0, 50, (2, 20))
    torch.testing.assert_close(fused(x)[0], explicit(x)[0], atol=1e-5, rtol=1e-5)


def test_ignore_index_masks_targets():
    torch.manual_seed(0)
    m = GPT(TINY).eval()
    x = torch.randint(0, 50, (1, 8))
    t = x.clone()
    _, full = m(x, t)
    t[0, :4] = IGNORE_INDEX
    logits, part = m(x, t)
    expected = torch.nn.functional.cross_entropy(logits[0, 4:], x[0, 4:])
    torch.testing.assert_close(part, expected)
    assert not torch.isclose(full, part)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**{**TINY.to_dict(), "dropout": 0.5}))
    x = torch.randint(0, 50, (1, 8))
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0])
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])


def test_too_long_input_names_the_context_window():
    with pytest.raises(ValueError, match="context window"):
        GPT(TINY)(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="batch, time"):
        GPT(TINY)(torch.zeros(33, dtype=torch.long))


def test_last_only_gives_the_last_positions_logits():
    torch.manual_seed(0)
    m = GPT(TINY).eval()
    x = torch.randint(0, 50, (2, 12))
    full, _ = m(x)
    last, _ = m(x, last_only=True)
    assert last.shape == (2, 1, 50)
    torch.testing.assert_close(last, full[:, -1:])
    with pytest.raises(ValueError, match="loss"):
        m(x, x, last_only=True)
