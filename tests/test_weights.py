import dataclasses

import pytest
import torch

from llmbook import GPT, GPTConfig
from llmbook.weights import (
    WeightsUnavailableError,
    config_from_llama,
    from_hf_state_dict,
    from_llama_state_dict,
    load_hf_gpt2,
    load_hf_llama,
    save_hf_gpt2,
    save_hf_llama,
)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=320, n_positions=64, n_embd=48, n_layer=3, n_head=4)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_hugging_face_weights_give_the_same_logits(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path)  # safetensors, Hugging Face layout
    ours = load_hf_gpt2(tmp_path).eval()
    x = torch.randint(0, 320, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf_model(x).logits, atol=1e-5, rtol=1e-5)


def test_our_weights_load_into_hugging_face(tmp_path):
    torch.manual_seed(1)
    ours = GPT.from_preset("char-tiny").eval()
    save_hf_gpt2(ours, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 65, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x)[0], atol=1e-5, rtol=1e-5)


def test_loading_by_name_offline_fails_clearly(tmp_path, monkeypatch):
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="offline"):
        load_hf_gpt2("gpt2")


def test_unknown_source_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="gpt2-medium"):
        load_hf_gpt2("gpt-17")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_hf_gpt2(tmp_path)


def test_only_the_legacy_mask_buffers_are_dropped():
    d = 8
    hf = {
        "transformer.h.0.attn.bias": torch.tril(torch.ones(1, 1, 4, 4)),  # old causal-mask buffer
        "transformer.h.0.attn.masked_bias": torch.tensor(-1e4),  # old constant buffer
        "h.1.attn.bias": torch.tril(torch.ones(1, 1, 4, 4)),  # same, saved without the prefix
        "transformer.h.0.attn.c_attn.bias": torch.arange(3.0 * d),  # real parameters
        "transformer.h.0.attn.c_proj.bias": torch.arange(1.0 * d),
        # A real parameter whose name ends in "attn.bias" is kept whatever its shape: the old
        # suffix filter dropped this one silently (it kept 1-D tensors only by luck).
        "transformer.h.1.attn.c_attn.bias": torch.zeros(1, 3 * d),
    }
    ours = from_hf_state_dict(hf)
    assert set(ours) == {"h.0.attn.c_attn.bias", "h.0.attn.c_proj.bias", "h.1.attn.c_attn.bias"}
    torch.testing.assert_close(ours["h.0.attn.c_attn.bias"], torch.arange(3.0 * d))


def test_a_hugging_face_checkpoint_with_mask_buffers_loads(hf_model, tmp_path):
    from safetensors.torch import load_file, save_file

    hf_model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    n = hf_model.config.n_positions
    for i in range(hf_model.config.n_layer):  # as checkpoints saved by older transformers carry
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, n, n))
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours = load_hf_gpt2(tmp_path).eval()
    x = torch.randint(0, 320, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf_model(x).logits, atol=1e-5, rtol=1e-5)


def test_loading_by_name_uses_the_hub_files(hf_model, tmp_path, monkeypatch):
    """The gpu profile's path (base_model -> load_hf_gpt2("gpt2") -> the Hub), with the Hub
    replaced by a local GPT-2-shaped folder, so that it runs offline and on CPUs."""
    hub = pytest.importorskip("huggingface_hub")
    hf_model.save_pretrained(tmp_path)
    asked = []

    def fake_download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    from llmbook.pretrained import base_model

    pre = base_model("gpu")
    assert asked == [("openai-community/gpt2", "config.json"), ("openai-community/gpt2", "model.safetensors")]
    assert not pre.model.training and pre.tokenizer.n_vocab == 50257
    x = torch.randint(0, 320, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(pre.model(x)[0], hf_model(x).logits, atol=1e-5, rtol=1e-5)


# The Hugging Face Llama layout (chapter 13): RMSNorm, rotary positions, SwiGLU, grouped queries.
LLAMA_SHAPES = {  # hidden 64, 4 query heads, vocabulary 100; 2, 3 and 4 layers
    "gqa-tied": {"num_hidden_layers": 2, "num_key_value_heads": 2, "intermediate_size": 172,
                 "tie_word_embeddings": True},
    "mqa-untied-theta": {"num_hidden_layers": 3, "num_key_value_heads": 1, "intermediate_size": 128,
                         "tie_word_embeddings": False,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
    "mha-biases": {"num_hidden_layers": 4, "num_key_value_heads": 4, "intermediate_size": 96,
                   "tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True},
}


def random_llama(seed: int, **shape):
    """A small LlamaForCausalLM with every weight random (norm gains and biases too, which
    Hugging Face initialises to ones and zeros and so would hide a mix-up)."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, vocab_size=100,
                                   max_position_embeddings=64, **shape)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("shape", sorted(LLAMA_SHAPES))
def test_llama_weights_give_the_same_logits(shape, tmp_path):
    hf = random_llama(sorted(LLAMA_SHAPES).index(shape), **LLAMA_SHAPES[shape])
    hf.save_pretrained(tmp_path)
    ours = load_hf_llama(tmp_path).eval()
    assert ours.config.positions == "rope" and ours.config.kv_heads == hf.config.num_key_value_heads
    x = torch.randint(0, 100, (2, 40))
    later = torch.arange(7, 47).expand(2, -1)  # positions that do not start at 0
    with torch.no_grad():
        assert (ours(x)[0] - hf(x).logits).abs().max().item() < 1e-4
        assert (ours(x, positions=later)[0] - hf(x, position_ids=later).logits).abs().max().item() < 1e-4


def test_our_llama_shaped_model_round_trips_through_hugging_face(tmp_path):
    torch.manual_seed(3)
    config = GPTConfig(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=4, n_kv_head=2, bias=False,
                       layer_norm_epsilon=1e-6, norm="rmsnorm", positions="rope", mlp="swiglu",
                       tie_word_embeddings=False)
    ours = GPT(config).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "ln_" in name:  # RMSNorm gains start at 1, which would hide a mix-up
                p.add_(0.1 * torch.randn_like(p))
    save_hf_llama(ours, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 100, (2, 30))
    with torch.no_grad():
        assert (hf(x).logits - ours(x)[0]).abs().max().item() < 1e-4
    back = load_hf_llama(tmp_path)
    assert back.config == dataclasses.replace(config, intermediate_size=config.hidden_size)  # written out
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_llama_options_gpt_cannot_match_are_refused(tmp_path):
    base = random_llama(0, **LLAMA_SHAPES["gqa-tied"]).config.to_dict()
    with pytest.raises(ValueError, match="rotary scaling 'llama3'"):
        config_from_llama({**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}})
    with pytest.raises(ValueError, match="SiLU"):
        config_from_llama({**base, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="attention_bias and mlp_bias"):
        config_from_llama({**base, "attention_bias": True})
    with pytest.raises(ValueError, match="save_hf_gpt2"):
        save_hf_llama(GPT.from_preset("char-tiny"), tmp_path)
    # An older file with the rotary buffers loads; one with a missing tensor names it.
    hf = random_llama(0, **LLAMA_SHAPES["gqa-tied"])
    config = config_from_llama(hf.config.to_dict())
    state = dict(hf.state_dict())
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    assert set(from_llama_state_dict(state, config)) == set(GPT(config).state_dict()) - {"lm_head.weight"}
    del state["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match=r"missing \['model.layers.1.mlp.up_proj.weight'\]"):
        from_llama_state_dict(state, config)
