"""llmbook.attention: the KV cache is written in place and gives the logits of a full recomputation."""

from __future__ import annotations

import pytest
import torch

from llmbook import GPT, GPTConfig
from llmbook.attention import CausalSelfAttention, KVCache
from llmbook.generate import generate

CFG = GPTConfig(vocab_size=40, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def model_for(attn_impl: str, dtype: torch.dtype = torch.float64) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**CFG.to_dict(), "attn_impl": attn_impl})).to(dtype).eval()


@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@torch.no_grad()
def test_prefill_after_a_cached_prefix_equals_recomputing(attn_impl, dtype, tol):
    model = model_for(attn_impl, dtype)
    x = torch.randint(0, 40, (3, 20))
    full, _ = model(x)
    cache = KVCache(CFG.n_layer)
    first, _ = model(x[:, :7], cache=cache)  # a cached prefix
    several, _ = model(x[:, 7:12], cache=cache)  # five tokens at once after it
    one, _ = model(x[:, 12:13], cache=cache)  # then one
    rest, _ = model(x[:, 13:], cache=cache)
    assert cache.length == 20
    got = torch.cat([first, several, one, rest], dim=1)
    torch.testing.assert_close(got, full, atol=tol, rtol=tol)


@torch.no_grad()
def test_the_cache_is_allocated_once_and_written_in_place():
    model = model_for("sdpa")
    cache = KVCache(CFG.n_layer)
    model(torch.randint(0, 40, (2, 5)), cache=cache)
    keys = [k.data_ptr() for k in cache.keys]
    values = [v.data_ptr() for v in cache.values]
    for step in range(20):
        model(torch.randint(0, 40, (2, 1)), cache=cache)
        assert [k.data_ptr() for k in cache.keys] == keys, f"keys reallocated at step {step}"
        assert [v.data_ptr() for v in cache.values] == values, f"values reallocated at step {step}"
    # keys/values show the filled part only: 2 L d numbers per token, as chapter 7 counts them
    assert all(k.shape == (2, CFG.n_head, 25, CFG.head_dim) for k in cache.keys)
    # and the buffers were sized to the context window by the model, once
    assert cache.max_length == CFG.n_positions


def test_generate_reuses_one_buffer_per_layer(monkeypatch):
    model = model_for("sdpa")
    pointers: list[tuple[int, ...]] = []

    class Recording(KVCache):
        def append(self, layer, k, v):
            out = super().append(layer, k, v)
            if layer == 0:
                pointers.append((out[0].data_ptr(), out[1].data_ptr()))
            return out

    monkeypatch.setattr("llmbook.generate.KVCache", Recording)
    out = generate(model, torch.randint(0, 40, (2, 4)), 12)
    assert out.shape == (2, 16) and len(pointers) == 12
    assert len(set(pointers)) == 1


def test_a_standalone_layer_grows_its_cache_and_stays_exact():
    torch.manual_seed(0)
    attn = CausalSelfAttention(CFG).double().eval()
    x = torch.randn(2, 9, CFG.n_embd, dtype=torch.float64)
    cache = KVCache(1)  # no max_length and no model to set it: it grows geometrically
    with torch.no_grad():
        parts = [attn(x[:, a:b], cache=cache) for a, b in [(0, 2), (2, 3), (3, 7), (7, 9)]]
        torch.testing.assert_close(torch.cat(parts, dim=1), attn(x), atol=1e-12, rtol=1e-12)
    assert cache.length == 9


def test_misuse_is_a_clear_error():
    cache = KVCache(1, max_length=4)
    k = torch.zeros(1, 2, 3, 8)
    cache.append(0, k, k)
    with pytest.raises(ValueError, match="at most 4 positions"):
        cache.append(0, k, k)
    with pytest.raises(ValueError, match="new KVCache per batch"):
        cache.append(0, torch.zeros(2, 2, 1, 8), torch.zeros(2, 2, 1, 8))
    with pytest.raises(ValueError, match="max_length"):
        KVCache(1, max_length=0)
