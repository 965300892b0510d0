"""Instruction fine-tuning (``llmbook.finetune``), LoRA (``llmbook.lora``) and answer metrics
(``llmbook.metrics``), the library behind chapter 10."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmbook.config import GPTConfig
from llmbook.finetune import (
    ALPACA_PREAMBLE,
    RESPONSE_HEADER,
    InstructionDataset,
    LengthGroupedBatches,
    encode_example,
    finetune,
    format_example,
    format_prompt,
    generate_answers,
    load_instruction_data,
    masked_loss,
    masked_targets,
    pad_batch,
    split_data,
)
from llmbook.generate import generate_text
from llmbook.lora import (
    DEFAULT_TARGETS,
    LoRALinear,
    apply_lora,
    lora_parameter_count,
    lora_parameters,
    merge_lora,
    train_token_rows,
)
from llmbook.metrics import exact_match, lcs_length, normalize, rouge_l, score_answers, token_f1
from llmbook.model import GPT, IGNORE_INDEX, count_trainable
from llmbook.tokenizers import ByteTokenizer
from llmbook.train import train

TOK = ByteTokenizer()
ENTRIES = [
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5."},
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Make it plural.", "input": "cat", "output": "cats"},
    {"instruction": "Spell it backwards.", "input": "abc", "output": "cba"},
]


def tiny_gpt(n_positions: int = 96, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=TOK.n_vocab, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2, dropout=0.0)
    return GPT(cfg).eval()


# --------------------------------------------------------------------------- format and data


def test_format_prompt_follows_alpaca_and_skips_an_empty_input() -> None:
    with_input = format_prompt(ENTRIES[1])
    assert with_input == "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    without = format_prompt(ENTRIES[0])
    assert "### Input" not in without and without.endswith(RESPONSE_HEADER)
    assert format_prompt(ENTRIES[0], preamble=ALPACA_PREAMBLE).startswith(ALPACA_PREAMBLE + "\n\n### Instruction:")
    assert format_example(ENTRIES[0]) == without + "Hi!"
    with pytest.raises(KeyError, match="instruction"):
        format_prompt({"input": "x"})


def test_split_is_deterministic_disjoint_and_85_5_10() -> None:
    records = load_instruction_data()
    assert len(records) == 1100
    split = split_data(records, seed=0)
    assert [len(s) for s in split] == [935, 55, 110]
    again = split_data(records, seed=0)
    assert split.test == again.test
    ids = [id(r) for part in split for r in part]
    assert len(set(ids)) == 1100
    assert split_data(records, seed=1).test != split.test
    with pytest.raises(ValueError, match="sum to 1"):
        split_data(records, (0.5, 0.2, 0.2))


def test_encode_example_marks_the_response_and_appends_end_of_text() -> None:
    prompt = format_prompt(ENTRIES[0])
    enc = encode_example(prompt, "Hi!", TOK)
    assert enc.prompt_length == len(prompt.encode())
    assert enc.ids[enc.prompt_length:] == list(b"Hi!") + [TOK.eot_token]


def test_a_prompt_longer_than_the_context_fails_clearly() -> None:
    prompt = format_prompt({"instruction": "x" * 100, "input": ""})
    with pytest.raises(ValueError, match="no room is left for a response"):
        encode_example(prompt, "ok", TOK, max_length=64)
    with pytest.raises(ValueError, match="truncate=True"):
        encode_example("short prompt\n", "y" * 100, TOK, max_length=64)
    cut = encode_example("short prompt\n", "y" * 100, TOK, max_length=64, truncate=True)
    assert len(cut.ids) == 65 and TOK.eot_token not in cut.ids
    with pytest.raises(ValueError, match="leaving no room for an answer"):
        generate_answers(tiny_gpt(n_positions=32), TOK, [prompt])


def test_only_response_tokens_are_targets() -> None:
    prompt, response = format_prompt(ENTRIES[1]), ENTRIES[1]["output"]
    ids, n_prompt = encode_example(prompt, response, TOK)
    x, y = masked_targets(ids, n_prompt)
    assert torch.equal(x, torch.tensor(ids[:-1]))
    counted = y[y != IGNORE_INDEX].tolist()
    assert counted == list(response.encode()) + [TOK.eot_token]
    assert (y[: n_prompt - 1] == IGNORE_INDEX).all()
    _, y_all = masked_targets(ids, n_prompt, mask_prompt=False)
    assert torch.equal(y_all, torch.tensor(ids[1:]))


def test_the_masked_loss_is_the_mean_over_response_tokens_only() -> None:
    model = tiny_gpt()
    ids, n_prompt = encode_example(format_prompt(ENTRIES[1]), ENTRIES[1]["output"], TOK)
    x, y = masked_targets(ids, n_prompt)
    logits, loss = model(x[None], y[None])
    per_token = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="none")
    torch.testing.assert_close(loss, per_token[n_prompt - 1:].mean())


def test_padding_does_not_change_the_loss() -> None:
    model = tiny_gpt()
    pairs = [masked_targets(*encode_example(format_prompt(e), e["output"], TOK)) for e in ENTRIES[:2]]
    (x, y), (x2, y2) = pairs
    _, alone = model(x[None], y[None])
    X, Y = pad_batch([(x, y)], TOK.eot_token, length=len(x) + 17)
    _, padded = model(X, Y)
    torch.testing.assert_close(padded, alone)
    # Two examples in one batch: the token-weighted mean of their own losses.
    _, other = model(x2[None], y2[None])
    _, both = model(*pad_batch(pairs, TOK.eot_token))
    n1, n2 = int((y != IGNORE_INDEX).sum()), int((y2 != IGNORE_INDEX).sum())
    torch.testing.assert_close(both, (alone * n1 + other * n2) / (n1 + n2))
    # Without the mask the padding counts, and the loss changes.
    _, unmasked = model(*pad_batch([(x, y)], TOK.eot_token, length=len(x) + 17, mask_padding=False))
    assert abs(unmasked.item() - alone.item()) > 1e-3


def test_pad_batch_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([], 0)
    with pytest.raises(ValueError, match="longer than the padded length"):
        pad_batch([(torch.ones(5, dtype=torch.long), torch.ones(5, dtype=torch.long))], 0, length=3)
    with pytest.raises(ValueError, match="x has 3 tokens but y has 2"):
        pad_batch([(torch.ones(3, dtype=torch.long), torch.ones(2, dtype=torch.long))], 0)


def test_dataset_drops_long_examples_and_works_with_train() -> None:
    long = {"instruction": "Repeat.", "input": "", "output": "z" * 200}
    ds = InstructionDataset([*ENTRIES, long], TOK, max_length=96)
    assert len(ds) == len(ENTRIES) and ds.dropped == 1
    x, y = ds[0]
    assert x.shape == y.shape == (ds.pad_to,)
    assert ds.pad_to == max(len(e.ids) for e in ds.encoded) - 1
    assert ds.response_tokens() == sum(len(e["output"].encode()) + 1 for e in ENTRIES)
    X, _Y = ds.batch([0, 2])
    assert X.shape[1] == max(len(ds.encoded[i].ids) for i in (0, 2)) - 1
    with pytest.raises(ValueError, match="more than the context"):
        InstructionDataset([long], TOK, max_length=96, too_long="error")
    with pytest.raises(ValueError, match="too_long"):
        InstructionDataset(ENTRIES, TOK, max_length=64, too_long="skip")
    model = tiny_gpt()
    history = train(model, ds, ds, max_steps=2, batch_size=2, warmup_steps=1, eval_interval=2,
                    eval_batches=1, progress=False)
    assert len(history.val_loss) == 1


def test_length_grouped_batches_visit_every_example_once_per_epoch() -> None:
    lengths = [5, 50, 7, 48, 6, 49, 8, 51, 9, 47]
    batches = LengthGroupedBatches(lengths, batch_size=2, seed=3, pool=5)
    epoch = [batches(k) for k in range(5)]
    assert sorted(i for b in epoch for i in b) == list(range(10))
    spread = max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in epoch)
    assert spread < 40  # sorted pools pair short with short
    again = LengthGroupedBatches(lengths, batch_size=2, seed=3, pool=5)
    assert [again(k) for k in range(5)] == epoch  # batch k depends only on k and the seed
    assert sorted(i for k in range(5, 10) for i in batches(k)) == list(range(10))
    assert [batches(k) for k in range(5, 10)] != epoch  # a new order every epoch


def test_finetune_lowers_the_masked_loss() -> None:
    model = tiny_gpt()
    ds = InstructionDataset(ENTRIES, TOK, max_length=96)
    before = masked_loss(model, ds)
    history = finetune(model, ds, ds, steps=40, batch_size=4, lr=1e-2, warmup_steps=5, progress=False)
    assert history.eval_steps == [40] and len(history.val_loss) == 1
    assert masked_loss(model, ds) < before - 1.0


def test_generate_answers_keeps_the_order_and_stops_at_end_of_text() -> None:
    model = tiny_gpt()
    prompts = [format_prompt(e) for e in ENTRIES]
    one_by_one = [generate_text(model, TOK, p, 12, stop_token=TOK.eot_token).replace("<|endoftext|>", "").strip()
                  for p in prompts]
    assert generate_answers(model, TOK, prompts, max_new_tokens=12, batch_size=1) == one_by_one
    batched = generate_answers(model, TOK, ENTRIES, max_new_tokens=12, batch_size=3)
    assert len(batched) == len(ENTRIES) and all("<|endoftext|>" not in a for a in batched)


def test_the_pipeline_works_with_gpt2s_tokenizer() -> None:
    from llmbook.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.n_vocab, n_positions=64, n_embd=16, n_layer=1, n_head=2)).eval()
    ds = InstructionDataset(ENTRIES, tok, max_length=64, preamble=ALPACA_PREAMBLE)
    assert len(ds) == len(ENTRIES)
    ids, n_prompt = ds.encoded[1]
    assert tok.decode(ids[n_prompt:-1]) == ENTRIES[1]["output"] and ids[-1] == tok.eot_token
    finetune(model, ds, steps=2, batch_size=2, warmup_steps=1, progress=False)
    answers, stopped = generate_answers(model, tok, ENTRIES[:2], max_new_tokens=4, preamble=ALPACA_PREAMBLE,
                                        return_stopped=True)
    assert len(answers) == len(stopped) == 2


# --------------------------------------------------------------------------- LoRA


def test_lora_with_b_zero_is_exactly_the_base_model() -> None:
    model = tiny_gpt()
    x = torch.randint(0, 256, (2, 20))
    before, _ = model(x)
    wrapped = apply_lora(model, r=4, alpha=8)
    assert len(wrapped) == 4 * model.config.n_layer
    after, _ = model(x)
    assert torch.equal(before, after)


def test_lora_targets_match_at_a_dot_boundary() -> None:
    model = tiny_gpt()
    wrapped = apply_lora(model, r=2, targets=("attn.c_proj",))
    assert wrapped == ["h.0.attn.c_proj", "h.1.attn.c_proj"]
    assert isinstance(model.h[0].mlp.c_proj, nn.Linear) and not isinstance(model.h[0].mlp.c_proj, LoRALinear)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, r=2)


def test_only_the_lora_matrices_train_and_the_counts_add_up() -> None:
    model = tiny_gpt()
    total_before = model.num_parameters()
    expected = lora_parameter_count(model, r=4)
    apply_lora(model, r=4, alpha=8)
    trainable, total = count_trainable(model)
    assert trainable == expected == sum(p.numel() for p in lora_parameters(model))
    assert total == total_before + expected
    names = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"lora_A", "lora_B"}
    c = model.config.n_embd
    per_block = 4 * ((c + 3 * c) + (c + c) + (c + 4 * c) + (4 * c + c))
    assert expected == model.config.n_layer * per_block


def test_first_step_moves_b_only_and_training_leaves_the_base_frozen() -> None:
    model = tiny_gpt()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_lora(model, r=4, alpha=8)
    ds = InstructionDataset(ENTRIES, TOK, max_length=96)
    x, y = ds.batch([0, 1])
    model.train()
    model(x, y)[1].backward()
    layer = model.h[0].attn.c_attn
    assert layer.lora_B.grad.abs().sum() > 0
    assert layer.lora_A.grad.abs().sum() == 0  # B = 0 blocks A's gradient on the first step
    model.zero_grad()
    finetune(model, ds, steps=5, batch_size=2, lr=1e-2, warmup_steps=1, progress=False)
    merged = dict(merge_lora(copy.deepcopy(model)).named_parameters())
    base_names = [n for n in frozen if "c_attn" not in n and "c_proj" not in n and "c_fc" not in n]
    for name in base_names:
        assert torch.equal(merged[name], frozen[name]), name
    assert not torch.equal(merged["h.0.attn.c_attn.weight"], frozen["h.0.attn.c_attn.weight"])


def test_merge_lora_gives_the_same_outputs_as_a_plain_gpt() -> None:
    model = tiny_gpt()
    keys = set(model.state_dict())
    apply_lora(model, r=4, alpha=8)
    torch.manual_seed(1)
    for p in lora_parameters(model):
        nn.init.normal_(p, std=0.2)
    x = torch.randint(0, 256, (2, 30))
    with torch.no_grad():
        adapted, _ = model(x)
        merged_model = merge_lora(model)
        merged, _ = merged_model(x)
    assert (adapted - merged).abs().max() < 1e-5
    assert (adapted - tiny_gpt()(x)[0]).abs().max() > 1e-2  # the update really changed the model
    assert set(merged_model.state_dict()) == keys
    assert not any(isinstance(m, LoRALinear) for m in merged_model.modules())
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(merged_model)


def test_train_token_rows_changes_only_those_rows() -> None:
    model = tiny_gpt()
    apply_lora(model, r=2, alpha=4)
    before = model.wte.weight.detach().clone()
    handle = train_token_rows(model.wte, [TOK.eot_token])
    ds = InstructionDataset(ENTRIES, TOK, max_length=96)
    finetune(model, ds, steps=5, batch_size=2, lr=1e-2, warmup_steps=1, progress=False)
    changed = (model.wte.weight.detach() != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [TOK.eot_token]
    handle.remove()
    with pytest.raises(ValueError, match="ids of this embedding"):
        train_token_rows(model.wte, [TOK.n_vocab])


def test_lora_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        LoRALinear(nn.Linear(8, 8), r=0)
    with pytest.raises(ValueError, match="larger than the layer"):
        LoRALinear(nn.Linear(8, 4), r=5)
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1), r=1)
    with pytest.raises(ValueError, match=r"no nn\.Linear layer matches"):
        apply_lora(tiny_gpt(), r=2, targets=("attn.q_proj",))
    assert DEFAULT_TARGETS == ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


# --------------------------------------------------------------------------- metrics


def test_lcs_on_hand_worked_examples() -> None:
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the textbook example (BCBA)
    assert lcs_length([], ["a"]) == 0
    assert lcs_length("abc", "abc") == 3


def test_rouge_l_counts_words_in_order() -> None:
    # LCS "the cat on the mat" = 5 of 6 words on each side: P = R = F = 5/6.
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # The same bag of words reversed: the LCS is 3 of 6 ("the sat the"), so F = 0.5;
    # token F1 ignores order and gives 1.
    reversed_ = "mat the on sat cat the"
    assert rouge_l(reversed_, "the cat sat on the mat") == pytest.approx(0.5)
    assert token_f1(reversed_, "the cat sat on the mat") == pytest.approx(1.0)
    # Unequal lengths: LCS 2, P = 2/2, R = 2/4, F = 2/3.
    assert rouge_l("cat mat", "the cat the mat") == pytest.approx(2 / 3)


def test_token_f1_counts_repeated_words_once_per_match() -> None:
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)
    assert token_f1("x y", "z") == 0.0


def test_metrics_normalise_case_and_punctuation() -> None:
    assert normalize("  The  Cat's, hat!  ") == "the cats hat"
    assert exact_match("Paris.", "paris") == 1.0
    assert rouge_l("Paris.", "paris") == 1.0
    assert exact_match("Paris", "Paris, France") == 0.0
    assert rouge_l("", "") == 1.0 and rouge_l("", "a") == 0.0 and token_f1("a", "") == 0.0


def test_score_answers_averages_and_checks_lengths() -> None:
    scores = score_answers(["the cat", "blue"], ["the cat", "red"])
    assert scores == {"rouge_l": 0.5, "token_f1": 0.5, "exact_match": 0.5}
    with pytest.raises(ValueError, match="pair up"):
        score_answers(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="expected a str"):
        rouge_l(None, "a")  # type: ignore[arg-type]
