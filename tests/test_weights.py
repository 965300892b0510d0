import pytest
import torch

from llmbook import GPT
from llmbook.weights import WeightsUnavailableError, from_hf_state_dict, load_hf_gpt2, save_hf_gpt2

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
