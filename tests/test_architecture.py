"""GPTConfig's post-GPT-2 options (chapter 13): GPT-2 stays exactly as it was, each option works.

The fingerprints below were computed with the code at commit 82d33da, before the options
existed (torch 2.13.0, CPU). They pin what every earlier chapter and the cached base model
rely on: the default model's tensor names and shapes, its initial values for a seed (and so
the order of its random draws), its outputs, and its checkpoint header.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from llmbook import GPT, GPTConfig
from llmbook.attention import KVCache
from llmbook.checkpoint import load_checkpoint, save_model
from llmbook.config import (
    ARCHITECTURE_DEFAULTS,
    PRESETS,
    PUBLISHED_PARAMETERS,
    count_parameters,
    parameter_breakdown,
)
from llmbook.generate import generate

SMALL = {"vocab_size": 50, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}
PINNED = {
    "tiny": {
        "config": SMALL,
        "structure": "eece89d164cc22bf213eb5f0e786203153f82dc5fa5f2d297081a0befb6434eb",
        "params": "5ef72405a70cf56a7b4e6e57d6faf704e68adcb43d86c554b72bbfde27e3971f",
        "loss": 3.570801019668579,
        "logits_sum": 25.13086629650934,
        "logits_abs": 147.84998025085224,
        "logits_first": [0.07822556048631668, 0.05953255295753479, 0.03663492575287819, 0.09352294355630875],
        "tokens": [[45, 39, 24, 18, 18, 18, 18, 18, 18, 18, 8, 8, 8, 8],
                   [2, 21, 42, 16, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29]],
        "header": '{"vocab_size": 50, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4, '
                  '"dropout": 0.0, "bias": true, "layer_norm_epsilon": 1e-05, "tie_word_embeddings": true, '
                  '"attn_impl": "sdpa", "name": "custom"}',
    },
    "untied_nobias": {
        "config": {**SMALL, "bias": False, "tie_word_embeddings": False},
        "structure": "2f29f11dd00244209d0b703f7e022f55412bceef21faf4b834a26b4c4a7f67ca",
        "params": "777be592c13e8ebb34ab42703f7ef32a6ea22da0fbcf9b234a191ef766a8e26a",
        "loss": 3.918105363845825,
        "logits_sum": 6.440312081655975,
        "logits_abs": 141.405561251363,
        "logits_first": [0.11440271884202957, -0.03497818857431412, -0.027485312893986702, 0.02425660379230976],
        "tokens": [[45, 39, 24, 18, 6, 18, 7, 8, 28, 32, 0, 32, 20, 47],
                   [2, 21, 42, 16, 0, 5, 6, 18, 39, 16, 0, 32, 20, 47]],
        "header": '{"vocab_size": 50, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4, '
                  '"dropout": 0.0, "bias": false, "layer_norm_epsilon": 1e-05, "tie_word_embeddings": false, '
                  '"attn_impl": "sdpa", "name": "custom"}',
    },
}

# A model with every later-model option on: RMSNorm, rotary positions, SwiGLU, grouped queries.
MODERN = GPTConfig(vocab_size=61, n_positions=48, n_embd=48, n_layer=2, n_head=6, n_kv_head=2, bias=False,
                   norm="rmsnorm", positions="rope", mlp="swiglu", tie_word_embeddings=False)


def structure_hash(state: dict[str, torch.Tensor]) -> str:
    """Names, shapes and dtypes of the tensors, in order."""
    layout = [[k, list(v.shape), str(v.dtype)] for k, v in state.items()]
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()


def values_hash(state: dict[str, torch.Tensor], after: torch.Tensor) -> str:
    """Every tensor's bytes, in order, and the random numbers drawn after building the model."""
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    h.update(after.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_default_model_is_the_gpt2_it_was(name, tmp_path):
    pinned = PINNED[name]
    torch.manual_seed(0)
    model = GPT(GPTConfig(**pinned["config"])).eval()
    after = torch.rand(4)  # the same draws in the same order leave the generator in the same state
    state = model.state_dict()
    assert structure_hash(state) == pinned["structure"], "tensor names or shapes changed"
    assert values_hash(state, after) == pinned["params"], "initial values (or the order of random draws) changed"

    torch.manual_seed(1)
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        logits, loss = model(x, x)
    # Outputs within float32 rounding (kernels differ across CPUs); at HEAD they matched bit for bit.
    assert loss.item() == pytest.approx(pinned["loss"], abs=1e-5)
    assert logits.double().sum().item() == pytest.approx(pinned["logits_sum"], abs=1e-3)
    assert logits.double().abs().sum().item() == pytest.approx(pinned["logits_abs"], abs=1e-3)
    assert logits[0, 0, :4].tolist() == pytest.approx(pinned["logits_first"], abs=1e-6)
    assert generate(model, x[:, :4], 10).tolist() == pinned["tokens"]

    path = save_model(model, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["llmbook"])
    assert json.dumps(header["config"]) == pinned["header"], "the checkpoint header changed"
    assert load_checkpoint(path).config == model.config


def test_architecture_defaults_are_the_dataclass_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
    assert {k: defaults[k] for k in ARCHITECTURE_DEFAULTS} == ARCHITECTURE_DEFAULTS


def test_options_round_trip_through_dict_and_checkpoint(tmp_path):
    assert "positions" in MODERN.to_dict() and "intermediate_size" not in MODERN.to_dict()
    assert GPTConfig.from_dict(MODERN.to_dict()) == MODERN
    torch.manual_seed(0)
    model = GPT(MODERN).eval()
    back = load_checkpoint(save_model(model, tmp_path / "m.safetensors")).build_model().eval()
    x = torch.randint(0, 61, (1, 12))
    assert back.config == MODERN and torch.equal(back(x)[0], model(x)[0])


@pytest.mark.parametrize(("overrides", "match"), [
    ({"norm": "batchnorm"}, r"norm must be one of \('layernorm', 'rmsnorm'\)"),
    ({"positions": "sinusoidal"}, r"positions must be one of \('learned', 'rope'\)"),
    ({"mlp": "relu"}, r"mlp must be one of \('gelu', 'swiglu'\)"),
    ({"n_kv_head": 3}, r"n_kv_head \(3\) must divide n_head \(4\).*choose a divisor"),
    ({"n_kv_head": 0}, "positive integer or None"),
    ({"intermediate_size": 2.5}, "positive integer or None"),
    ({"rope_theta": 0}, "rope_theta must be a number above 1"),
    ({"bias": "no"}, "bias must be True or False"),
    ({"tie_word_embeddings": 1}, "tie_word_embeddings must be True or False"),
    ({"n_embd": 36, "n_head": 12, "positions": "rope"}, r"head_dim .* must be even.*positions='learned'"),
])
def test_bad_options_are_rejected_with_the_fix(overrides, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**SMALL, **overrides})


@pytest.mark.parametrize("overrides", [
    {},
    {"norm": "rmsnorm"},
    {"positions": "rope"},
    {"mlp": "swiglu"},
    {"mlp": "swiglu", "intermediate_size": 40, "bias": False},
    {"n_kv_head": 1},
    {"n_kv_head": 2, "tie_word_embeddings": False},
    dataclasses.asdict(MODERN),
])
def test_counts_match_the_built_model(overrides):
    config = GPTConfig(**{**SMALL, **overrides})
    model = GPT(config)
    assert count_parameters(config) == model.num_parameters()
    blocks = list(model.h)
    size = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    breakdown = parameter_breakdown(config)
    assert breakdown["attention (all layers)"] == size(b.attn for b in blocks)
    assert breakdown["feed-forward (all layers)"] == size(b.mlp for b in blocks)


def test_each_option_builds_what_it_names():
    model = GPT(MODERN)
    assert model.wpe is None and "wpe.weight" not in model.state_dict()
    assert type(model.h[0].ln_1).__name__ == "RMSNorm" and not hasattr(model.h[0].ln_1, "bias")
    assert type(model.h[0].mlp).__name__ == "SwiGLU"
    kv = 2 * MODERN.head_dim
    assert model.h[0].attn.c_attn.weight.shape == (48 + 2 * kv, 48)
    assert model.h[0].attn.c_attn.bias is None
    assert MODERN.hidden_size == 128 and model.h[0].mlp.c_fc.weight.shape == (2 * 128, 48)  # 8/3 * 48
    assert GPTConfig().hidden_size == 4 * 768 and GPTConfig(mlp="swiglu").hidden_size == 2048  # Llama's 8/3 d


@pytest.fixture(scope="module")
def modern():
    torch.manual_seed(0)
    # float64 so that cached and recomputed logits cannot differ by rounding
    return GPT(MODERN).double().eval()


def test_kv_cache_equals_recompute_with_rope_and_grouped_queries(modern):
    x = torch.randint(0, 61, (2, 20))
    with torch.no_grad():
        full, _ = modern(x)
        cache = KVCache(MODERN.n_layer)
        first, _ = modern(x[:, :8], cache=cache)
        steps = [modern(x[:, t : t + 1], cache=cache)[0] for t in range(8, 20)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full)
    # The cache keeps only the key/value heads: n_head / n_kv_head = 3 times smaller.
    assert cache.keys[0].shape == (2, MODERN.kv_heads, 20, MODERN.head_dim)


def test_cached_generation_equals_recompute_with_rope_and_grouped_queries(modern):
    prompt = torch.randint(0, 61, (3, 6))
    with_cache = generate(modern, prompt, 25, use_cache=True)
    assert torch.equal(with_cache, generate(modern, prompt, 25, use_cache=False))
    # Left-padded prompts of different lengths: rotary positions count from each row's first token.
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    batched = generate(modern, prompts, 12)
    assert batched == generate(modern, prompts, 12, use_cache=False)
    assert batched == [generate(modern, [p], 12)[0] for p in prompts]


def test_multi_query_attention_generates_the_same_with_and_without_cache():
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(MODERN, n_kv_head=1)).double().eval()
    prompt = torch.randint(0, 61, (2, 5))
    assert torch.equal(generate(model, prompt, 20), generate(model, prompt, 20, use_cache=False))


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_grouped_queries_in_the_fused_kernel_equal_copied_heads(n_kv_head):
    """The fused path reads shared key/value heads in place (enable_gqa); the explicit path
    copies them out to one per query head. Both must agree: whole sequences, a cached
    prefix continued by several tokens and by one, and left padding (a key mask)."""
    torch.manual_seed(0)
    fused = GPT(dataclasses.replace(MODERN, n_kv_head=n_kv_head)).double().eval()
    explicit = GPT(dataclasses.replace(MODERN, n_kv_head=n_kv_head, attn_impl="explicit")).double().eval()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randint(0, 61, (2, 12))
    key_mask = torch.ones(2, 12, dtype=torch.bool)
    key_mask[0, :3] = False
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], explicit(x)[0])
        torch.testing.assert_close(fused(x, key_mask=key_mask)[0], explicit(x, key_mask=key_mask)[0])
        caches = KVCache(MODERN.n_layer), KVCache(MODERN.n_layer)
        for part in (x[:, :5], x[:, 5:9], x[:, 9:10]):
            torch.testing.assert_close(fused(part, cache=caches[0])[0], explicit(part, cache=caches[1])[0])


def test_a_modern_model_learns():
    """Every option together still trains: the loss on a repeated sequence falls."""
    torch.manual_seed(0)
    model = GPT(MODERN)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 61, (4, 24))
    first = None
    for _ in range(30):
        _, loss = model(x[:, :-1], x[:, 1:])
        assert loss is not None
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


FAMILIES = ["llama-2-7b", "llama-3-8b", "llama-3.2-1b", "mistral-7b", "smollm2-135m"]


@pytest.mark.parametrize("name", FAMILIES)
def test_family_presets_count_their_published_sizes(name):
    assert abs(count_parameters(name) / PUBLISHED_PARAMETERS[name] - 1) < 0.01
    with torch.device("meta"):  # the real modules, no memory behind them
        assert GPT(PRESETS[name]).num_parameters() == count_parameters(name)


def test_family_presets_hold_the_known_exact_counts():
    # The released weights' totals (the tensors in their safetensors files; Llama 3.1 8B
    # has the same shapes as Llama 3 8B).
    assert count_parameters("llama-3.2-1b") == 1_235_814_400
    assert count_parameters("llama-3-8b") == 8_030_261_248


def test_explicit_attention_agrees_with_fused_under_every_option(modern):
    explicit = GPT(dataclasses.replace(MODERN, attn_impl="explicit")).double().eval()
    explicit.load_state_dict(modern.state_dict())
    x = torch.randint(0, 61, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(explicit(x)[0], modern(x)[0])
    explicit.h[0].attn.keep_weights = True
    with torch.no_grad():
        explicit(x)
    assert explicit.h[0].attn.last_weights.shape == (2, MODERN.n_head, 16, 16)  # one map per query head


def test_generation_past_the_window_with_rotary_positions(modern):
    prompt = torch.randint(0, 61, (1, 40))
    out = generate(modern, prompt, 20, crop_context=True)  # 60 tokens through a 48-token window
    assert out.shape == (1, 60)
    assert torch.equal(out, generate(modern, prompt, 20, crop_context=True, use_cache=False))
