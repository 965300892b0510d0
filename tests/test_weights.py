import pytest
import torch

from llmbook import GPT
from llmbook.weights import WeightsUnavailableError, load_hf_gpt2, save_hf_gpt2

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
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_gpt2(tmp_path)
