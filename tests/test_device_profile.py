import pytest
import torch

from llmbook.device import best_device, seed_everything
from llmbook.profile import current_profile, pick


@pytest.mark.parametrize("cuda", [True, False])
def test_profile_follows_the_hardware_without_the_variable(monkeypatch, cuda):
    monkeypatch.delenv("LLMBOOK_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert current_profile() == ("gpu" if cuda else "cpu")
    assert pick(cpu=1, gpu=2) == (2 if cuda else 1)


def test_profile_follows_the_variable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LLMBOOK_PROFILE", " cpu ")
    assert current_profile() == "cpu"
    monkeypatch.setenv("LLMBOOK_PROFILE", "gpu")
    assert pick(cpu=1, gpu=2) == 2
    monkeypatch.setenv("LLMBOOK_PROFILE", "CPU")
    assert pick(cpu=1, gpu=2) == 1
    monkeypatch.setenv("LLMBOOK_PROFILE", "tpu")
    with pytest.raises(ValueError, match="LLMBOOK_PROFILE"):
        pick(cpu=1, gpu=2)


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_device_choice_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.delenv("LLMBOOK_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert best_device() == torch.device(expected)


def test_the_device_variable_overrides_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LLMBOOK_DEVICE", "cpu")
    assert best_device() == torch.device("cpu")
    monkeypatch.setenv("LLMBOOK_DEVICE", "abacus")
    with pytest.raises(ValueError, match="LLMBOOK_DEVICE"):
        best_device()


def test_seeding_repeats_draws():
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))
