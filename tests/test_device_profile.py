import pytest
import torch

from llmbook.device import autocast, autocast_dtype, best_device, seed_everything
from llmbook.profile import current_profile, pick


def test_profile_follows_hardware_and_env(monkeypatch):
    monkeypatch.delenv("LLMBOOK_PROFILE", raising=False)
    assert current_profile() == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("LLMBOOK_PROFILE", "gpu")
    assert pick(cpu=1, gpu=2) == 2
    monkeypatch.setenv("LLMBOOK_PROFILE", "CPU")
    assert pick(cpu=1, gpu=2) == 1
    monkeypatch.setenv("LLMBOOK_PROFILE", "tpu")
    with pytest.raises(ValueError, match="LLMBOOK_PROFILE"):
        pick(cpu=1, gpu=2)


def test_device_choice(monkeypatch):
    monkeypatch.delenv("LLMBOOK_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else best_device().type
    assert best_device().type == expected
    monkeypatch.setenv("LLMBOOK_DEVICE", "cpu")
    assert best_device() == torch.device("cpu")
    monkeypatch.setenv("LLMBOOK_DEVICE", "abacus")
    with pytest.raises(ValueError, match="LLMBOOK_DEVICE"):
        best_device()


def test_cpu_runs_in_fp32_by_default():
    assert autocast_dtype("cpu") is None
    with autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast("cpu", dtype=torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_seeding_repeats_draws():
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))
