"""llmbook.preference: answer log-probabilities, the DPO loss, pair datasets and the training loop."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.config import GPTConfig
from llmbook.finetune import RESPONSE_HEADER
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.preference import (
    PreferenceDataset,
    PreferencePair,
    dpo_loss,
    dpo_train,
    make_pairs,
    pair_logprobs,
    preference_metrics,
    sequence_logprobs,
)
from llmbook.tokenizers import ByteTokenizer


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=ByteTokenizer.n_vocab, n_positions=96, n_embd=32, n_layer=2, n_head=2)
    return GPT(config).eval()


def pairs(n: int = 12) -> list[PreferencePair]:
    out = []
    for i in range(n):
        prompt = f"### Instruction:\nSay the number {i}.\n\n{RESPONSE_HEADER}"
        out.append(PreferencePair(prompt, f"The number is {i}.", "no no no no"))
    return out


def test_sequence_logprobs_counts_only_the_answer() -> None:
    model, tok = tiny_model(), ByteTokenizer()
    data = PreferenceDataset(pairs(2), tok, max_length=96)
    x, y = data.batch([0, 1])
    assert x.shape == y.shape and x.shape[0] == 4
    got = sequence_logprobs(model, x, y)
    # by hand, one row at a time and unpadded: the answer's tokens (and end-of-text) after the prompt
    for row, enc in enumerate(data.chosen + data.rejected):
        ids = torch.tensor(enc.ids)
        logp = torch.log_softmax(model(ids[None, :-1])[0][0], dim=-1)
        answer = range(enc.prompt_length - 1, len(ids) - 1)
        expected = sum(logp[t, ids[t + 1]] for t in answer)
        torch.testing.assert_close(got[row], expected, rtol=1e-4, atol=1e-4)
    assert (y[:, : data.chosen[0].prompt_length - 1] == IGNORE_INDEX).all()


def test_sequence_logprobs_equals_minus_summed_cross_entropy() -> None:
    model = tiny_model(1)
    x = torch.randint(0, 257, (3, 10))
    y = torch.randint(0, 257, (3, 10))
    y[0, :4] = IGNORE_INDEX
    y[2] = IGNORE_INDEX
    logits, _ = model(x)
    ce = F.cross_entropy(logits.transpose(1, 2), y, reduction="none", ignore_index=IGNORE_INDEX).sum(-1)
    got = sequence_logprobs(model, x, y)
    torch.testing.assert_close(got, -ce)
    assert got[2].item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        sequence_logprobs(model, x, y[:, :5])


def test_dpo_loss_formula_and_edge_cases() -> None:
    pc, pr = torch.tensor([-10.0, -40.0]), torch.tensor([-12.0, -35.0])
    rc, rr = torch.tensor([-11.0, -41.0]), torch.tensor([-11.0, -36.0])
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)
    margins = 0.5 * ((pc - rc) - (pr - rr))
    torch.testing.assert_close(out.margins, margins)
    torch.testing.assert_close(out.loss, -torch.log(torch.sigmoid(margins)).mean())
    torch.testing.assert_close(out.chosen_rewards, 0.5 * (pc - rc))
    same = dpo_loss(pc, pr, pc, pr)
    assert math.isclose(same.loss.item(), math.log(2), rel_tol=1e-6)
    huge = dpo_loss(torch.tensor([-5000.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), 1.0)
    assert math.isfinite(huge.loss.item()) and huge.loss.item() == pytest.approx(5000.0)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(pc, pr[:1], rc, rr)


def test_dataset_drops_pairs_that_do_not_fit() -> None:
    tok = ByteTokenizer()
    long_pair = PreferencePair("### Instruction:\nhi\n\n### Response:\n", "x" * 200, "y")
    data = PreferenceDataset([*pairs(3), long_pair], tok, max_length=96)
    assert len(data) == 3 and data.dropped == 1
    with pytest.raises(ValueError, match="no preference pair fits"):
        PreferenceDataset([long_pair], tok, max_length=96)
    with pytest.raises(TypeError, match="prompt, chosen, rejected"):
        PreferenceDataset([("only", "two")], tok, max_length=96)


def test_make_pairs_uses_the_instruction_format() -> None:
    records = [{"instruction": "Add.", "input": "1 + 1", "output": "2"}]
    (pair,) = make_pairs(records, ["3"])
    assert pair.prompt.endswith(RESPONSE_HEADER) and "1 + 1" in pair.prompt
    assert (pair.chosen, pair.rejected) == ("2", "3")
    with pytest.raises(ValueError, match="one per record"):
        make_pairs(records, [])


def test_metrics_of_the_reference_itself() -> None:
    chosen, rejected = torch.tensor([-5.0, -9.0, -2.0]), torch.tensor([-6.0, -3.0, -8.0])
    m = preference_metrics((chosen, rejected), (chosen, rejected), beta=0.1)
    assert m["reward_margin"] == 0.0 and m["reward_accuracy"] == 0.0
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert m["logprob_margin"] == pytest.approx(((chosen - rejected).mean()).item())
    assert m["loss"] == pytest.approx(math.log(2))


def test_dpo_train_raises_the_margin_and_leaves_the_reference_alone() -> None:
    tok = ByteTokenizer()
    policy = tiny_model(2)
    reference = copy.deepcopy(policy)
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    data = PreferenceDataset(pairs(12), tok, max_length=96)
    ref = pair_logprobs(reference, data)
    history = dpo_train(policy, reference, data, steps=25, batch_size=4, beta=0.1, lr=3e-3, progress=False)
    assert len(history.train_loss) == 25 and history.train_loss[0] == pytest.approx(math.log(2), rel=1e-4)
    after = preference_metrics(pair_logprobs(policy, data), ref, beta=0.1)
    assert after["reward_margin"] > 0.5 and after["reward_accuracy"] == 1.0
    assert all(torch.equal(frozen[k], v) for k, v in reference.state_dict().items())
    assert not any(p.requires_grad for p in reference.parameters())
    assert not policy.training


def test_dpo_train_rejects_bad_arguments() -> None:
    model = tiny_model()
    data = PreferenceDataset(pairs(2), ByteTokenizer(), max_length=96)
    with pytest.raises(ValueError, match="separate"):
        dpo_train(model, model, data, steps=1, progress=False)
    with pytest.raises(ValueError, match="positive"):
        dpo_train(model, copy.deepcopy(model), data, steps=0, progress=False)


def test_dpo_train_is_reproducible() -> None:
    data = PreferenceDataset(pairs(8), ByteTokenizer(), max_length=96)
    results = []
    for _ in range(2):
        policy = tiny_model(3)
        history = dpo_train(policy, copy.deepcopy(policy), data, steps=5, batch_size=3, lr=1e-3, seed=1,
                            progress=False)
        results.append(history.train_loss)
    assert results[0] == results[1]
