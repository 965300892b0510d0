import itertools
import math

import pytest
import torch

from llmbook import GPT, GPTConfig
from llmbook.datasets import TokenWindows
from llmbook.history import History
from llmbook.model import IGNORE_INDEX
from llmbook.step import configure_optimizer, lr_at
from llmbook.train import TrainConfig, batch_indices, evaluate, train

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


class MaskedWindows(torch.utils.data.Dataset):
    """Windows whose targets that are multiples of 3 are ignored: examples count different
    numbers of targets, which is what separates a token-weighted loss from a mean of means."""

    def __init__(self, windows):
        self.windows = windows

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        x, y = self.windows[i]
        return x, torch.where(y % 3 == 0, IGNORE_INDEX, y)


def test_accumulation_with_masked_targets_equals_one_big_batch(data):
    masked = MaskedWindows(data[0])
    counts = [int((masked[i][1] != IGNORE_INDEX).sum()) for i in range(len(masked))]
    assert len(set(counts)) > 1  # the micro-batches really do count different numbers
    a, b = fresh(dropout=0.0), fresh(dropout=0.0)
    kw = dict(max_steps=5, lr=1e-3, warmup_steps=1, eval_interval=0, progress=False)
    ha = train(a, masked, batch_size=8, **kw)
    hb = train(b, masked, batch_size=2, grad_accum_steps=4, **kw)
    assert ha.train_loss == pytest.approx(hb.train_loss, rel=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def test_evaluate_weighs_every_counted_target_the_same(data):
    masked, model = MaskedWindows(data[1]), fresh()
    x = torch.stack([masked[i][0] for i in range(len(masked))])
    y = torch.stack([masked[i][1] for i in range(len(masked))])
    with torch.no_grad():
        logits, _ = model.eval()(x)
    direct = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                               ignore_index=IGNORE_INDEX).item()
    for batch_size in (1, 3, len(masked)):
        got = evaluate(model, masked, batch_size=batch_size, max_batches=None)
        assert got == pytest.approx(direct, rel=1e-5), f"batch_size={batch_size}"


def test_training_leaves_the_model_in_the_mode_it_found(data):
    for mode in (True, False):
        model = fresh()
        model.train(mode)
        train(model, *data, max_steps=2, batch_size=4, eval_interval=1, progress=False)
        assert model.training is mode


@pytest.mark.parametrize("change", [dict(max_steps=40), dict(batch_size=4), dict(seed=8),
                                    dict(grad_accum_steps=2), dict(lr=1e-3), dict(warmup_steps=2)])
def test_resume_refuses_a_changed_setting_and_names_it(tmp_path, data, change):
    kw = dict(max_steps=30, batch_size=8, lr=2e-3, warmup_steps=5, eval_interval=0, progress=False, seed=7)
    train(fresh(), data[0], **kw, checkpoint_path=str(tmp_path / "ck.safetensors"), checkpoint_interval=10)
    (name,) = change
    with pytest.raises(ValueError, match=f"{name}=.*allow_changes"):
        train(fresh(), data[0], **{**kw, **change}, resume_from=tmp_path / "ck.safetensors")
    # Saying so on purpose continues with the new value.
    history = train(fresh(), data[0], **{**kw, **change}, resume_from=tmp_path / "ck.safetensors",
                    allow_changes={name})
    assert history.steps[-1] == change.get("max_steps", 30)


def test_resume_refuses_other_data(tmp_path, data):
    kw = dict(max_steps=10, batch_size=8, warmup_steps=1, eval_interval=0, progress=False)
    train(fresh(), data[0], **kw, checkpoint_path=str(tmp_path / "ck.safetensors"), checkpoint_interval=5)
    with pytest.raises(ValueError, match="other data"):
        train(fresh(), data[1], **kw, resume_from=tmp_path / "ck.safetensors")
    with pytest.raises(ValueError, match="allow_changes names"):
        train(fresh(), data[0], **kw, resume_from=tmp_path / "ck.safetensors", allow_changes={"colour"})


def test_a_step_with_nothing_to_count_says_so(data):
    class AllIgnored(MaskedWindows):
        def __getitem__(self, i):
            x, y = self.windows[i]
            return x, torch.full_like(y, IGNORE_INDEX)

    with pytest.raises(ValueError, match="no counted target"):
        train(fresh(), AllIgnored(data[0]), max_steps=1, batch_size=2, progress=False)
