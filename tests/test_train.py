import itertools
import math

import pytest
import torch

from llmbook import GPT, GPTConfig
from llmbook.data import TokenWindows
from llmbook.train import (
    History,
    TrainConfig,
    batch_indices,
    configure_optimizer,
    evaluate,
    lr_at,
    train,
)

CFG = GPTConfig(vocab_size=16, n_positions=16, n_embd=32, n_layer=2, n_head=2, dropout=0.1)


def periodic_tokens(n=2000):
    # A learnable stream: a repeating pattern with a little noise.
    g = torch.Generator().manual_seed(0)
    base = torch.arange(n) % 7
    noise = torch.randint(0, 16, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.05, noise, base)


@pytest.fixture
def data():
    t = periodic_tokens()
    return TokenWindows(t[:1600], 16, 4), TokenWindows(t[1600:], 16, 16)


def fresh(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG.to_dict(), **overrides}))


def test_training_learns_a_pattern(data):
    model = fresh()
    hist = train(model, *data, max_steps=120, batch_size=8, lr=3e-3, warmup_steps=10,
                 eval_interval=40, progress=False)
    assert hist.val_loss[0] > hist.val_loss[-1]
    assert hist.final_val_loss < 0.6 * math.log(16)
    assert hist.eval_steps == [40, 80, 120] and len(hist.train_loss) == 120
    assert hist.tokens_seen == 120 * 8 * 16


def test_weight_decay_only_on_matrices():
    model = fresh()
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_parameters()


def test_warmup_then_cosine():
    lrs = [lr_at(s, 100, 1.0, 0.1, 10) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[55] == pytest.approx(0.55, abs=0.01) and lrs[100] == pytest.approx(0.1)


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(10, 4, seed=3, first_sample=s) for s in range(0, 20, 4)])
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])  # a new order every epoch


def test_gradient_accumulation_equals_a_bigger_batch(data):
    a, b = fresh(dropout=0.0), fresh(dropout=0.0)
    kw = dict(max_steps=5, lr=1e-3, warmup_steps=1, eval_interval=0, progress=False)
    train(a, data[0], batch_size=8, **kw)
    train(b, data[0], batch_size=4, grad_accum_steps=2, **kw)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def test_resuming_reaches_the_same_weights(tmp_path, data):
    kw = dict(max_steps=30, batch_size=8, lr=2e-3, warmup_steps=5, eval_interval=10, progress=False, seed=7)
    straight = fresh()
    torch.manual_seed(123)  # dropout draws from the global generator
    h_straight = train(straight, *data, **kw, checkpoint_path=str(tmp_path / "ck-{step}.safetensors"),
                       checkpoint_interval=12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck-12.safetensors", "ck-24.safetensors",
                                                          "ck-30.safetensors"]
    # A new process: different weights, a different random state, then resume at step 12.
    resumed = fresh(seed=42)
    torch.manual_seed(999)
    h_resumed = train(resumed, *data, **kw, resume_from=tmp_path / "ck-12.safetensors")
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0, msg=f"{name} differs after resuming")
    assert h_resumed.steps == h_straight.steps
    assert h_resumed.val_loss == pytest.approx(h_straight.val_loss)


def test_evaluate_is_deterministic_and_restores_mode(data):
    model = fresh()
    model.train()
    a = evaluate(model, data[1], batch_size=4, max_batches=3)
    assert a == evaluate(model, data[1], batch_size=4, max_batches=3) and model.training


def test_history_plots_labelled_curves(data):
    import matplotlib

    matplotlib.use("Agg")
    hist = train(fresh(), *data, max_steps=30, batch_size=4, eval_interval=10, progress=False)
    ax = hist.plot()
    assert ax.get_xlabel() == "training step" and "loss" in ax.get_ylabel()
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"validation", "train (eval)"}
    assert History.from_dict(hist.to_dict()) == hist


def test_bad_train_config_is_rejected():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(max_steps=0)
