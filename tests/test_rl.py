"""llmbook.rl: GRPO's pieces (advantages, clipped loss, k3 KL), its training loop, and a reward model.

The end-to-end tests use one tiny task whose answer a program can check: a prompt of four
letters with one digit among them, ``ab2bf=``, is answered by that digit, ``2``.
"""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from llmbook import rl
from llmbook.config import GPTConfig
from llmbook.finetune import encode_example, masked_targets, pad_batch
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.preference import PreferenceDataset, PreferencePair, sample_completions
from llmbook.rl import (
    GRPOObjective,
    RewardModel,
    bradley_terry_loss,
    check_reward,
    clipped_tokens,
    group_advantages,
    grpo_token_loss,
    grpo_train,
    kl_k3,
    mean_reward,
    pair_batch,
    pairwise_accuracy,
    sample_groups,
    train_reward_model,
)
from llmbook.step import NextTokenLoss
from llmbook.tokenizers import ByteTokenizer
from llmbook.train import TrainConfig, batch_indices, fit

TOK = ByteTokenizer()


def tiny_gpt(seed: int = 0, n_positions: int = 16) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.n_vocab, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2))


def digit_prompts(n: int, seed: int) -> list[str]:
    """``n`` prompts such as ``ab2bf=``: four letters from a-h and one digit, somewhere."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        chars = [rng.choice("abcdefgh") for _ in range(4)]
        chars.insert(rng.randrange(5), str(rng.randrange(10)))
        out.append("".join(chars) + "=")
    return out


def digit_of(prompt: str) -> str:
    return next(c for c in prompt if c.isdigit())


def digit_reward(prompt: str, completion: str) -> float:
    return float(completion == digit_of(prompt))


def sft(model: GPT, prompts: list[str], steps: int, seed: int = 0) -> GPT:
    """Supervised fine-tuning on prompt -> digit, loss on the answer only (chapter 10's masking)."""
    rows = [masked_targets(*encode_example(p, digit_of(p), TOK)) for p in prompts]
    cfg = TrainConfig(max_steps=steps, batch_size=16, lr=3e-3, warmup_steps=5, weight_decay=0.0, seed=seed,
                      progress=False)
    fit(model, NextTokenLoss(), cfg, sample=lambda k: batch_indices(len(rows), 16, seed, k * 16),
        collate_batch=lambda idx: pad_batch([rows[i] for i in idx.tolist()], TOK.eot_token))
    return model


def sampled_reward(model: GPT, prompts: list[str], copies: int = 4) -> float:
    """Mean reward of completions sampled at temperature 1: what GRPO maximises."""
    repeated = prompts * copies
    done = sample_completions(model, TOK, repeated, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    return sum(digit_reward(p, t) for p, t in zip(repeated, done.texts)) / len(repeated)


# --------------------------------------------------------------------------- advantages


def test_group_advantages_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    adv = group_advantages(rewards, group_size=4)
    # group 1: mean 1/4, sample std sqrt((9/16 + 3/16) / 3) = 1/2 -> (1 - 1/4) / (1/2) = 1.5, (0 - 1/4) / (1/2) = -0.5
    # group 2: mean 1/2, sample std sqrt(4 * 1/4 / 3) = 1/sqrt(3) -> ±sqrt(3)/2
    half_root3 = math.sqrt(3) / 2
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, half_root3, half_root3, -half_root3, -half_root3])
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-5)
    # the advantage does not depend on the reward's scale or offset
    torch.testing.assert_close(group_advantages(10 * rewards + 3, 4), expected, rtol=1e-5, atol=1e-5)


def test_groups_with_equal_rewards_give_no_signal() -> None:
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.3, 0.9, 0.3])
    adv = group_advantages(rewards, group_size=3)
    assert torch.equal(adv[:6], torch.zeros(6))  # all right, all wrong: exactly 0
    assert adv[7] > 0 > adv[6] and adv[6] == adv[8]
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(rewards, group_size=1)
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(rewards, group_size=4)


# --------------------------------------------------------------------------- the clipped loss and the KL


def test_raising_a_high_advantage_completion_lowers_the_loss() -> None:
    logp = torch.tensor([[-1.0, -2.0], [-1.5, -0.5]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    loss = grpo_token_loss(logp, logp.detach(), adv).sum()
    loss.backward()
    assert logp.grad is not None
    # on-policy the ratio is 1, so the gradient is -A per token: down for A > 0, up for A < 0
    torch.testing.assert_close(logp.grad, torch.tensor([[-2.0, -2.0], [1.0, 1.0]]))
    old = logp.detach()
    with torch.no_grad():
        up_good = old + torch.tensor([[0.05, 0.05], [0.0, 0.0]])
        up_bad = old + torch.tensor([[0.0, 0.0], [0.05, 0.05]])
        assert grpo_token_loss(up_good, old, adv).sum() < loss < grpo_token_loss(up_bad, old, adv).sum()


def test_the_clip_stops_the_gradient_only_in_the_direction_the_advantage_pushes() -> None:
    # ratios e^0.5 = 1.65 (above 1.2), e^-0.5 = 0.61 (below 0.8) and e^0.1 = 1.11 (inside)
    logp = torch.tensor([[0.5, -0.5, 0.1], [0.5, -0.5, 0.1]], requires_grad=True)
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    grpo_token_loss(logp, old, adv, clip_eps=0.2).sum().backward()
    assert logp.grad is not None
    r = torch.exp(logp.detach())
    # A > 0: a ratio already above 1 + eps gets no push further up; below 1 - eps it still does
    # A < 0: a ratio already below 1 - eps gets no push further down; above 1 + eps it still does
    expected = torch.tensor([[0.0, -r[0, 1], -r[0, 2]], [r[1, 0], 0.0, r[1, 2]]])
    torch.testing.assert_close(logp.grad, expected)
    assert clipped_tokens(logp, old, adv, 0.2).tolist() == [[True, False, False], [False, True, False]]
    with pytest.raises(ValueError, match="clip_eps"):
        grpo_token_loss(logp, old, adv, clip_eps=0.0)


def test_kl_k3_is_nonnegative_zero_at_equal_policies_and_estimates_the_kl() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g) * 3, torch.randn(1000, generator=g) * 3
    assert (kl_k3(a, b) >= 0).all()
    assert torch.equal(kl_k3(a, a), torch.zeros(1000))
    # on tokens drawn from pi its mean is KL(pi || ref)
    pi = torch.tensor([0.5, 0.2, 0.2, 0.05, 0.05])
    ref = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2])
    exact = (pi * (pi / ref).log()).sum()
    tokens = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    estimate = kl_k3(pi.log()[tokens], ref.log()[tokens]).mean()
    assert estimate.item() == pytest.approx(exact.item(), rel=0.03)


def test_rewards_must_be_numbers() -> None:
    assert check_reward(True, "p", "c") == 1.0 and check_reward(torch.tensor(0.5), "p", "c") == 0.5
    with pytest.raises(TypeError, match=r"must return a number.*'c'"):
        check_reward("yes", "p", "c")
    with pytest.raises(ValueError, match="nan"):
        check_reward(float("nan"), "p", "c")


# --------------------------------------------------------------------------- sampling groups and the objective


def test_sample_groups_lays_out_groups_and_counts_completion_tokens() -> None:
    policy, prompts = tiny_gpt(1), digit_prompts(3, seed=5)
    reference = copy.deepcopy(policy)
    batch = sample_groups(policy, reference, TOK, prompts, lambda p, c: float(len(c)), group_size=4,
                          max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert batch.x.shape[0] == 12 and batch.old_logp is None
    for row in range(12):  # each row: its group's prompt, then the completion as the only targets
        prompt = TOK.encode(prompts[row // 4])
        assert batch.x[row, : len(prompt)].tolist() == prompt
        assert (batch.y[row, : len(prompt) - 1] == IGNORE_INDEX).all()
    objective = GRPOObjective(beta=0.1)
    n = objective.count(batch)
    assert n == int((batch.y != IGNORE_INDEX).sum()) and 12 <= n <= 60
    assert batch.logs["completion_tokens"] == pytest.approx(n / 12)
    # the policy is the reference and samples on-policy: ratio 1 and KL 0, so the loss is -sum_i A_i * len_i
    out = objective.loss(policy.train(), batch)
    lengths = (batch.y != IGNORE_INDEX).sum(dim=1).float()
    assert out.total.item() == pytest.approx(-(batch.advantages * lengths).sum().item(), abs=1e-4)
    assert out.sums["kl"] == pytest.approx(0.0, abs=1e-5) and out.sums["clip_frac"] == 0


def test_a_group_of_equal_rewards_gives_no_gradient_without_the_kl() -> None:
    policy = tiny_gpt(2)
    batch = sample_groups(policy, copy.deepcopy(policy), TOK, digit_prompts(2, 6), lambda p, c: 1.0,
                          group_size=3, max_new_tokens=4, generator=torch.Generator().manual_seed(1))
    assert batch.logs["zero_signal"] == 1.0 and batch.logs["reward"] == 1.0
    assert torch.equal(batch.advantages, torch.zeros(6))
    GRPOObjective(beta=0.0).loss(policy.train(), batch).total.backward()
    assert all(p.grad is None or not p.grad.any() for p in policy.parameters())


# --------------------------------------------------------------------------- the training loop


def _short_run(seed: int, **kwargs: object) -> tuple[list[float], dict[str, torch.Tensor]]:
    policy = tiny_gpt(3)
    history = grpo_train(policy, copy.deepcopy(policy), digit_prompts(8, 7), lambda p, c: float(len(c)), TOK,
                         steps=3, prompts_per_step=4, group_size=4, max_new_tokens=4, lr=1e-2, seed=seed,
                         progress=False, **kwargs)
    return history.train_loss + history.reward + history.kl, policy.state_dict()


def test_grpo_train_is_reproducible_per_seed() -> None:
    first, weights = _short_run(seed=0)
    again, weights_again = _short_run(seed=0)
    other, weights_other = _short_run(seed=1)
    assert first == again and all(torch.equal(weights[k], weights_again[k]) for k in weights)
    assert first != other and any(not torch.equal(weights[k], weights_other[k]) for k in weights)


def test_a_reused_batch_is_sampled_once_and_clipped_on_later_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = rl.sample_groups

    def counting(*args: object, **kwargs: object) -> rl.GRPOBatch:
        calls.append(kwargs["keep_old_logp"])
        return original(*args, **kwargs)

    monkeypatch.setattr(rl, "sample_groups", counting)
    policy = tiny_gpt(4)
    history = grpo_train(policy, copy.deepcopy(policy), digit_prompts(8, 8), lambda p, c: float(len(c)), TOK,
                         steps=6, prompts_per_step=4, group_size=4, max_new_tokens=4, lr=3e-2, warmup_steps=0,
                         updates_per_batch=3, seed=0, progress=False)
    assert calls == [True, True]  # two rounds of three updates, old log-probs kept
    assert history.reward[0] == history.reward[1] == history.reward[2]
    # the first update of a round is on-policy (ratio 1): nothing to clip; a large step moves the ratios
    assert history.clip_frac[0] == history.clip_frac[3] == 0
    assert max(history.clip_frac[1:3] + history.clip_frac[4:]) > 0


def test_grpo_train_rejects_bad_arguments() -> None:
    policy = tiny_gpt()
    reference = copy.deepcopy(policy)
    prompts = digit_prompts(4, 0)
    ok = {"steps": 1, "progress": False, "max_new_tokens": 3}
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        grpo_train(policy, reference, prompts, digit_reward, TOK, group_size=1, **ok)
    with pytest.raises(ValueError, match="no prompts"):
        grpo_train(policy, reference, [], digit_reward, TOK, **ok)
    with pytest.raises(ValueError, match="temperature"):
        grpo_train(policy, reference, prompts, digit_reward, TOK, temperature=0.0, **ok)
    with pytest.raises(ValueError, match="separate"):
        grpo_train(policy, policy, prompts, digit_reward, TOK, **ok)
    with pytest.raises(TypeError, match="reward_fn"):
        grpo_train(policy, reference, prompts, "exact", TOK, **ok)
    with pytest.raises(TypeError, match="must return a number"):
        grpo_train(policy, reference, prompts, lambda p, c: c, TOK, **ok)
    with pytest.raises(ValueError, match="room for prompts"):
        grpo_train(policy, reference, ["x" * 15], digit_reward, TOK, **ok)


def test_grpo_raises_the_held_out_reward_of_an_sft_model() -> None:
    """SFT briefly, then GRPO with the checkable reward: held-out exact match and sampled reward rise."""
    train_prompts, test_prompts = digit_prompts(200, seed=1), digit_prompts(100, seed=2)
    policy = sft(tiny_gpt(0), train_prompts, steps=150)
    reference = copy.deepcopy(policy)
    greedy_before = mean_reward(policy, TOK, test_prompts, digit_reward, max_new_tokens=3)
    sampled_before = sampled_reward(policy, test_prompts)
    history = grpo_train(policy, reference, train_prompts, digit_reward, TOK, steps=150, prompts_per_step=16,
                         group_size=8, max_new_tokens=3, lr=2e-3, beta=0.04, seed=0, progress=False,
                         measure=lambda: {"val_exact": mean_reward(policy, TOK, test_prompts, digit_reward,
                                                                   max_new_tokens=3)},
                         eval_interval=75)
    greedy_after = mean_reward(policy, TOK, test_prompts, digit_reward, max_new_tokens=3)
    sampled_after = sampled_reward(policy, test_prompts)
    # measured with model/GRPO seeds 0-2: greedy 0.65 -> 1.00, 0.78 -> 1.00, 0.77 -> 1.00;
    # sampled 0.30 -> 0.78, 0.40 -> 0.82, 0.30 -> 0.73
    assert greedy_after >= max(greedy_before + 0.15, 0.95)
    assert sampled_after >= max(sampled_before + 0.3, 2 * sampled_before)
    assert history.eval_steps == [0, 75, 150] and history.val_exact[0] == greedy_before
    assert history.val_exact[-1] == greedy_after
    first, last = history.reward[:20], history.reward[-20:]
    assert sum(last) > 1.8 * sum(first)  # the reward on the training samples rose too
    assert history.kl[0] == pytest.approx(0.0, abs=1e-6) and min(history.kl) >= 0 and max(history.kl) > 0
    assert 0 <= min(history.zero_signal) and max(history.zero_signal) <= 1
    assert all(not p.requires_grad for p in reference.parameters())


# --------------------------------------------------------------------------- the reward model


def digit_pairs(n: int, seed: int) -> list[PreferencePair]:
    """The digit task as comparisons: the right digit against another digit (no other cue)."""
    rng, out = random.Random(seed), []
    for prompt in digit_prompts(n, seed):
        right = int(digit_of(prompt))
        out.append(PreferencePair(prompt, str(right), str(rng.choice([d for d in range(10) if d != right]))))
    return out


def test_bradley_terry_loss() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 3.0])
    expected = -torch.log(torch.sigmoid(chosen - rejected)).mean()
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), expected)
    assert bradley_terry_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))
    assert math.isfinite(bradley_terry_loss(torch.tensor([-1e4]), torch.tensor([0.0])).item())
    with pytest.raises(ValueError, match="pair up"):
        bradley_terry_loss(chosen, rejected[:2])


def test_pair_batch_scores_the_last_real_token_of_each_answer() -> None:
    data = PreferenceDataset([PreferencePair("ab1=", "1", "22"), PreferencePair("c3dd=", "3", "4")], TOK, 15)
    batch = pair_batch(data, [1, 0])
    assert batch.labels.tolist() == [1, 1, 0, 0]
    assert batch.ids[0, : int(batch.mask[0].sum())].tolist() == TOK.encode("c3dd=3") + [TOK.eot_token]
    assert batch.ids[3, : int(batch.mask[3].sum())].tolist() == TOK.encode("ab1=22") + [TOK.eot_token]
    model = RewardModel(tiny_gpt(5)).eval()
    scores = model(batch.ids, batch.mask)
    alone = model(torch.tensor([TOK.encode("ab1=22") + [TOK.eot_token]]))
    assert scores.shape == (4,)
    torch.testing.assert_close(scores[3:], alone, rtol=1e-5, atol=1e-5)  # padding changes nothing


def test_reward_model_learns_to_prefer_the_right_answer_on_held_out_prompts() -> None:
    train, test = PreferenceDataset(digit_pairs(400, 1), TOK, 15), PreferenceDataset(digit_pairs(100, 2), TOK, 15)
    model = RewardModel(tiny_gpt(1))
    before = pairwise_accuracy(model, test)
    history = train_reward_model(model, train, steps=300, batch_size=16, lr=5e-3, seed=1, progress=False,
                                 measure=lambda: {"val_acc": pairwise_accuracy(model, test)}, eval_interval=150)
    after = pairwise_accuracy(model, test)
    # measured on seeds 0-4: held-out pairwise accuracy from 0.44-0.57 (chance: 0.5) to 0.95-1.00
    assert before < 0.65 and after >= 0.85
    assert history.val_acc == [before, history.val_acc[1], after]
    assert sum(history.accuracy[-20:]) / 20 > 0.85 and history.train_loss[-1] < 0.2


def test_train_reward_model_rejects_bad_arguments() -> None:
    data = PreferenceDataset(digit_pairs(4, 0), TOK, 15)
    with pytest.raises(ValueError, match="max_length=5"):
        train_reward_model(RewardModel(tiny_gpt(0, n_positions=6)), data, steps=1, progress=False)
    with pytest.raises(TypeError, match="RewardModel"):
        train_reward_model(tiny_gpt(0), data, steps=1, progress=False)
    with pytest.raises(ValueError, match="positive"):
        train_reward_model(RewardModel(tiny_gpt(0)), data, steps=0, progress=False)
