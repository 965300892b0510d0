"""The precision policy (``llmbook.precision``) and the shared step that every loop uses it through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmbook.classification import ClassificationDataset, Example, GPTClassifier, freeze, train_classifier
from llmbook.config import GPTConfig
from llmbook.datasets import TokenWindows
from llmbook.finetune import InstructionDataset, finetune
from llmbook.model import GPT
from llmbook.precision import autocast_dtype, cpu_has_bf16, grad_scaler, precision_context, resolve
from llmbook.preference import PreferenceDataset, PreferencePair, dpo_train
from llmbook.tokenizers import ByteTokenizer
from llmbook.train import train

TOK = ByteTokenizer()


def fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    # What PyTorch answers on a T4 too (bf16 by emulation): the policy must not trust it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp16"), ((7, 0), "fp16"),
                                                      ((8, 0), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_auto_picks_bf16_only_on_gpus_with_bf16_tensor_cores(monkeypatch, capability, expected):
    fake_gpu(monkeypatch, capability)
    assert resolve("cuda", "auto") == expected
    assert resolve("cuda:0", "fp32") == "fp32"  # an explicit choice is kept
    assert resolve("cuda", "bf16") == "bf16"


def test_auto_is_fp32_on_cpu_and_choices_are_checked():
    assert resolve("cpu", "auto") == "fp32" and autocast_dtype("cpu") is None
    assert autocast_dtype("cpu", "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve("cpu", "fp8")


def test_the_gradient_scaler_is_on_for_fp16_only():
    assert grad_scaler("cpu", "fp16").is_enabled()
    for precision in ("fp32", "bf16", "auto"):
        assert not grad_scaler("cpu", precision).is_enabled()


def test_precision_context_casts_matmuls_and_keeps_weights_fp32():
    layer = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with precision_context("cpu", precision):
            assert layer(x).dtype == dtype
        assert layer.weight.dtype == torch.float32


# --------------------------------------------------------------------------- every loop


def tiny_gpt(n_positions: int = 96) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=TOK.n_vocab, n_positions=n_positions, n_embd=32, n_layer=1,
                         n_head=2))


def record_dtypes(model: nn.Module) -> list[torch.dtype]:
    """The output dtypes of the model's first attention projection, one per forward pass."""
    seen: list[torch.dtype] = []
    layer = next(m for m in model.modules() if isinstance(m, nn.Linear))
    layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    return seen


ENTRIES = [{"instruction": f"Repeat {w}.", "input": "", "output": w} for w in ("cat", "dog", "owl", "bee")]


def run_pretraining(model: GPT, precision: str) -> list[float]:
    ids = torch.randint(0, 50, (400,), generator=torch.Generator().manual_seed(0))
    return train(model, TokenWindows(ids, 32), max_steps=2, batch_size=2, warmup_steps=1,
                 eval_interval=0, precision=precision, progress=False).train_loss


def run_classification(model: GPT, precision: str) -> list[float]:
    texts = [Example("win a prize now", 1), Example("see you at home", 0)] * 4
    clf = GPTClassifier(model)
    freeze(clf, "all")
    ds = ClassificationDataset(texts, TOK, max_length=32)
    return train_classifier(clf, ds, max_steps=2, batch_size=2, eval_interval=0, precision=precision,
                            progress=False).train_loss


def run_instructions(model: GPT, precision: str) -> list[float]:
    ds = InstructionDataset(ENTRIES, TOK, max_length=96)
    return finetune(model, ds, steps=2, batch_size=2, warmup_steps=1, precision=precision,
                    progress=False).train_loss


def run_dpo(model: GPT, precision: str) -> list[float]:
    pairs = [PreferencePair(f"Say {w}:", w, "no") for w in ("cat", "dog", "owl", "bee")]
    ds = PreferenceDataset(pairs, TOK, max_length=96)
    reference = tiny_gpt()  # the same weights (same seed), without the dtype hook
    return dpo_train(model, reference, ds, steps=2, batch_size=2, warmup_steps=1,
                     precision=precision, progress=False).train_loss


LOOPS = [run_pretraining, run_classification, run_instructions, run_dpo]


@pytest.mark.parametrize("loop", LOOPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                  ("fp16", torch.float16)])
def test_every_loop_trains_in_the_precision_it_is_given(loop, precision, dtype):
    model = tiny_gpt()
    seen = record_dtypes(model)
    losses = loop(model, precision)
    assert seen and all(d == dtype for d in seen[:2]), f"{loop.__name__} computed in {set(seen)}"
    assert all(torch.isfinite(torch.tensor(losses))) and len(losses) == 2
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_cpu_bf16_support_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open

    def fake_cpuinfo(flags: str):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        return lambda name, *a, **k: real_open(path if name == "/proc/cpuinfo" else name, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_cpuinfo("fpu avx2 avx512f avx512_bf16"))
    assert cpu_has_bf16()
    monkeypatch.setattr(builtins, "open", fake_cpuinfo("fpu avx2 avx512f"))
    assert not cpu_has_bf16()
