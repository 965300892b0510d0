"""llmbook.preference: answer log-probabilities, the DPO loss, pair datasets and the training loop."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from llmbook import preference
from llmbook.config import GPTConfig
from llmbook.finetune import RESPONSE_HEADER, format_prompt, generate_answers
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.preference import (
    DPOObjective,
    PreferenceDataset,
    PreferencePair,
    dpo_loss,
    dpo_train,
    exact_match_reward,
    make_pairs,
    pair_logprobs,
    pairs_from_mistakes,
    preference_metrics,
    sample_completions,
    sequence_kl,
    sequence_logprobs,
    token_logprobs,
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
    assert m["ranking_accuracy"] == pytest.approx(2 / 3)
    assert "win_rate" not in m  # renamed: it ranks two given answers, it does not judge generations
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


def test_dpo_nll_weight_adds_the_chosen_answers_nll() -> None:
    data = PreferenceDataset(pairs(6), ByteTokenizer(), max_length=96)
    policy = tiny_model(4)
    x, y = data.batch([0, 1, 2])
    logps = sequence_logprobs(policy, x, y)
    nll = -logps[:3] / (y[:3] != IGNORE_INDEX).sum(-1)  # per token of each chosen answer
    plain = DPOObjective(copy.deepcopy(policy), data, beta=0.1).loss(policy, ([0, 1, 2], x, y))
    mixed = DPOObjective(copy.deepcopy(policy), data, beta=0.1, nll_weight=0.5).loss(policy, ([0, 1, 2], x, y))
    assert plain.total.item() == pytest.approx(3 * math.log(2), rel=1e-5)  # policy = reference
    assert mixed.total.item() == pytest.approx(plain.total.item() + 0.5 * nll.sum().item(), rel=1e-5)
    assert plain.sums["chosen_nll"] == pytest.approx(nll.sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="nll_weight"):
        DPOObjective(policy, data, beta=0.1, nll_weight=-1.0)


def test_dpo_nll_weight_keeps_the_chosen_answers_more_likely() -> None:
    data = PreferenceDataset(pairs(8), ByteTokenizer(), max_length=96)
    final = {}
    for weight in (0.0, 1.0):
        policy = tiny_model(4)
        history = dpo_train(policy, copy.deepcopy(policy), data, steps=15, batch_size=4, lr=3e-3, seed=0,
                            nll_weight=weight, progress=False)
        final[weight] = history.chosen_nll[-1]
    # measured with models of seeds 4-6: 4.46 -> 4.28, 4.43 -> 4.29, 4.48 -> 4.32 nats per token
    assert final[1.0] < final[0.0] - 0.1


# --------------------------------------------------------------------------- computable tasks


def test_token_logprobs_add_up_to_the_sequence_logprob() -> None:
    model, data = tiny_model(5), PreferenceDataset(pairs(3), ByteTokenizer(), max_length=96)
    x, y = data.batch([0, 1, 2])
    per_token = token_logprobs(model, x, y)
    assert per_token.shape == x.shape and (per_token[y == IGNORE_INDEX] == 0).all()
    assert (per_token[y != IGNORE_INDEX] < 0).all()
    torch.testing.assert_close(per_token.sum(-1), sequence_logprobs(model, x, y))


def test_exact_match_reward_is_strict_about_signs_and_case() -> None:
    record = {"instruction": "Compute.", "input": "1 - 4", "output": "-3"}
    assert exact_match_reward(record, " -3\n") == 1.0
    assert exact_match_reward(record, "3") == 0.0  # metrics.exact_match would drop the minus sign
    assert exact_match_reward({"instruction": "Reverse.", "input": "Hello", "output": "olleH"}, "olleh") == 0.0
    with pytest.raises(TypeError, match="instruction record"):
        exact_match_reward("### Instruction:\nCompute.", "-3")


def test_pairs_from_mistakes_pairs_the_right_answer_with_the_models_wrong_one(monkeypatch) -> None:
    records = [{"instruction": "Add.", "input": f"{i} + 1", "output": str(i + 1)} for i in range(4)]
    seen = {}

    def canned(model, tokenizer, prompts, max_new_tokens, batch_size, preamble):
        seen.update(prompts=prompts, max_new_tokens=max_new_tokens)
        return ["1", "7", "3", ""]  # right, wrong, right, wrong (says nothing)

    monkeypatch.setattr(preference, "generate_answers", canned)
    out = pairs_from_mistakes(tiny_model(), ByteTokenizer(), records, max_new_tokens=5)
    assert seen == {"prompts": records, "max_new_tokens": 5}
    assert out.indices == [1, 3] and out.skipped == 2 and out.answers == ["1", "7", "3", ""]
    assert out.pairs == [PreferencePair(format_prompt(records[1]), "2", "7"),
                         PreferencePair(format_prompt(records[3]), "4", "")]
    # a custom check: any answer with the right last digit counts as correct
    out = pairs_from_mistakes(tiny_model(), ByteTokenizer(), records, correct=lambda r, a: a[-1:] == r["output"][-1])
    assert out.indices == [1, 3]
    with pytest.raises(ValueError, match="no records"):
        pairs_from_mistakes(tiny_model(), ByteTokenizer(), [])


def test_pairs_from_mistakes_with_a_real_model() -> None:
    records = [{"instruction": "Say a number.", "input": str(i), "output": str(i)} for i in range(5)]
    model, tok = tiny_model(6), ByteTokenizer()
    out = pairs_from_mistakes(model, tok, records, max_new_tokens=4)
    assert out.answers == generate_answers(model, tok, records, 4)  # the greedy answers
    assert out.skipped + len(out.pairs) == 5 and out.skipped == 0  # a random model gets nothing right
    assert all(p.rejected == out.answers[i] for p, i in zip(out.pairs, out.indices))
    PreferenceDataset(out.pairs, tok, max_length=96)  # the pairs encode as DPO data


def test_sample_completions_are_reproducible_and_stop_at_end_of_text() -> None:
    model, tok = tiny_model(7), ByteTokenizer()
    prompts = ["### Instruction:\nHi.\n\n### Response:\n", "abc"] * 3
    first = sample_completions(model, tok, prompts, max_new_tokens=6, generator=torch.Generator().manual_seed(3))
    again = sample_completions(model, tok, prompts, max_new_tokens=6, generator=torch.Generator().manual_seed(3))
    other = sample_completions(model, tok, prompts, max_new_tokens=6, generator=torch.Generator().manual_seed(4))
    assert first == again and first.completion_ids != other.completion_ids
    for prompt, ids, new, text, stopped in zip(prompts, *first):
        assert ids == tok.encode(prompt) and 1 <= len(new) <= 6
        assert stopped == (new[-1] == tok.eot_token) and tok.eot_token not in new[:-1]
        assert text == tok.decode(new[:-1] if stopped else new).strip()
    _, y = first.batch(tok.eot_token)
    assert int((y != IGNORE_INDEX).sum()) == sum(len(c) for c in first.completion_ids)
    with pytest.raises(ValueError, match="room for prompts"):
        sample_completions(model, tok, ["x" * 95], max_new_tokens=6)
    with pytest.raises(ValueError, match="temperature"):
        sample_completions(model, tok, prompts, max_new_tokens=6, temperature=0.0)


def test_sequence_kl_is_zero_for_the_reference_and_estimates_the_kl() -> None:
    policy, reference, tok = tiny_model(8), tiny_model(9), ByteTokenizer()
    with torch.no_grad():  # sharper next-token distributions than a fresh model's, so the two differ
        policy.ln_f.weight.mul_(10)
        reference.ln_f.weight.mul_(10)
    prompts = ["### Instruction:\nHi.\n\n### Response:\n"]
    same = sequence_kl(policy, copy.deepcopy(policy), tok, prompts, samples_per_prompt=8, max_new_tokens=4)
    assert same["kl"] == 0.0 and same["kl_per_token"] == 0.0 and 1 <= same["tokens"] <= 4
    # one new token: the sequence KL is the KL of the next-token distributions, computable exactly
    ids = torch.tensor([tok.encode(prompts[0])])
    with torch.no_grad():
        p = torch.log_softmax(policy(ids)[0][0, -1], -1)
        q = torch.log_softmax(reference(ids)[0][0, -1], -1)
    exact = (p.exp() * (p - q)).sum().item()
    got = sequence_kl(policy, reference, tok, prompts, samples_per_prompt=2000, max_new_tokens=1, seed=1,
                      batch_size=1000)
    assert got["tokens"] == 1.0 and exact > 0.5
    assert got["kl"] == pytest.approx(exact, rel=0.1) and got["kl_per_token"] == pytest.approx(got["kl"])
    with pytest.raises(ValueError, match="samples_per_prompt"):
        sequence_kl(policy, reference, tok, prompts, samples_per_prompt=0)
