import json
import os

import pytest
import torch
from safetensors import safe_open

from llmbook import GPT, GPTConfig
from llmbook.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model

CFG = GPTConfig(vocab_size=20, n_positions=16, n_embd=16, n_layer=1, n_head=2)


def adamw(model: GPT) -> torch.optim.AdamW:
    """AdamW with two parameter groups (decayed matrices, undecayed vectors), as training uses."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                              {"params": vectors, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95))


def test_model_round_trip_without_pickle(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    path = save_model(model, tmp_path / "m.safetensors", tokenizer="chars")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (pickle) was used"))
    again = load_model(path).eval()
    x = torch.randint(0, 20, (2, 10))
    torch.testing.assert_close(model(x)[0], again(x)[0], atol=0, rtol=0)
    assert again.lm_head.weight.data_ptr() == again.wte.weight.data_ptr()  # still tied
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["llmbook"])
    assert header["config"]["n_embd"] == 16 and header["extra"] == {"tokenizer": "chars"}
    assert load_checkpoint(path).extra == {"tokenizer": "chars"}


def test_optimizer_state_round_trips(tmp_path):
    torch.manual_seed(0)
    model = GPT(CFG)
    opt = adamw(model)
    model(torch.randint(0, 20, (2, 8)), torch.randint(0, 20, (2, 8)))[1].backward()
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", model, opt, step=1)
    ckpt = load_checkpoint(tmp_path / "c.safetensors")
    opt2 = adamw(ckpt.build_model())
    ckpt.restore_optimizer(opt2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for pid in s1["state"]:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(s1["state"][pid][key], s2["state"][pid][key])
    assert s1["param_groups"] == s2["param_groups"]


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = GPT(CFG)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, step=1)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.safetensors"]  # no temporary left behind


def test_wrong_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not an llmbook checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")
    path = save_model(GPT(CFG), tmp_path / "m.safetensors")
    bigger = GPT(GPTConfig(**{**CFG.to_dict(), "n_layer": 2}))
    from llmbook.checkpoint import load_model_tensors

    with pytest.raises(ValueError, match="missing"):
        load_model_tensors(bigger, load_checkpoint(path).model_state)
