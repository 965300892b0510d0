import pytest
import torch
import torch.nn.functional as F

from llmbook import GPTConfig
from llmbook.layers import RMSNorm, SwiGLU, apply_rotary, make_norm, rotary_cos_sin


def test_rmsnorm_scales_to_unit_root_mean_square():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=0.0)
    x = torch.randn(3, 5, 16) * 7 + 2
    y = norm(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3, 5))
    with torch.no_grad():
        norm.weight.fill_(2.0)
    torch.testing.assert_close(norm(x), 2 * y)
    # Unlike LayerNorm it keeps the mean's direction: a constant vector stays constant, not zero.
    assert torch.allclose(norm(torch.full((1, 16), 3.0)), torch.full((1, 16), 2.0))


def test_rmsnorm_works_in_float32_under_half_precision():
    x = torch.full((1, 8), 300.0, dtype=torch.float16)  # 300^2 overflows float16
    assert torch.isfinite(RMSNorm(8).half()(x)).all()


def test_make_norm_follows_the_config():
    assert isinstance(make_norm(GPTConfig()), torch.nn.LayerNorm)
    assert isinstance(make_norm(GPTConfig(norm="rmsnorm")), RMSNorm)


def test_rotary_dot_products_depend_on_relative_position_only():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m: int, n: int) -> float:
        cos_m, sin_m = rotary_cos_sin(torch.tensor([[m]]), 8)
        cos_n, sin_n = rotary_cos_sin(torch.tensor([[n]]), 8)
        return (apply_rotary(q, cos_m, sin_m) * apply_rotary(k, cos_n, sin_n)).sum().item()

    assert score(5, 2) == pytest.approx(score(103, 100), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)


def test_rotary_keeps_lengths_and_position_zero_is_the_identity():
    x = torch.randn(2, 3, 7, 16)
    cos, sin = rotary_cos_sin(torch.arange(7)[None], 16)
    torch.testing.assert_close(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(apply_rotary(x, cos, sin)[:, :, 0], x[:, :, 0])


def test_rotate_half_is_the_papers_interleaved_rotation_reordered():
    """Hugging Face pairs dimension i with i + d/2; the RoPE paper pairs 2i with 2i + 1."""
    d, pos = 8, torch.arange(4)[None]
    x = torch.randn(1, 1, 4, d)
    cos, sin = rotary_cos_sin(pos, d)
    # The paper's form, on interleaved pairs, with the same angles.
    angle = torch.atan2(sin[..., : d // 2], cos[..., : d // 2])[:, None]  # (1, 1, 4, d/2)
    order = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # interleaved -> halves
    inter = x[..., torch.argsort(order)]  # x laid out as the paper's pairs (x_i, x_{i + d/2})
    a, b = inter[..., 0::2], inter[..., 1::2]
    paper = torch.stack([a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()], dim=-1).flatten(-2)
    torch.testing.assert_close(paper[..., order], apply_rotary(x, cos, sin))


def test_swiglu_is_silu_gate_times_value():
    torch.manual_seed(0)
    config = GPTConfig(n_embd=12, n_head=2, mlp="swiglu", intermediate_size=20)
    mlp = SwiGLU(config)
    x = torch.randn(2, 3, 12)
    gate_w, value_w = mlp.c_fc.weight[:20], mlp.c_fc.weight[20:]
    gate, value = x @ gate_w.T + mlp.c_fc.bias[:20], x @ value_w.T + mlp.c_fc.bias[20:]
    expected = mlp.c_proj(F.silu(gate) * value)
    torch.testing.assert_close(mlp(x), expected)
