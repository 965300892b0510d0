"""llmbook.classification: data split, padding, last-token pooling, freezing, training (chapter 9)."""

from __future__ import annotations

import pytest
import torch

from llmbook import classification as C
from llmbook.config import GPTConfig
from llmbook.device import seed_everything
from llmbook.model import GPT
from llmbook.tokenizers import ByteTokenizer

TINY = GPTConfig(vocab_size=257, n_positions=32, n_embd=16, n_layer=2, n_head=2, dropout=0.0, name="tiny")


def tiny_classifier(seed: int = 0) -> C.GPTClassifier:
    seed_everything(seed)
    return C.GPTClassifier(GPT(TINY)).eval()


def toy_examples(n_ham: int = 30, n_spam: int = 10) -> list[C.Example]:
    return [C.Example(f"ham message {i}", 0) for i in range(n_ham)] + [
        C.Example(f"WIN a prize {i}!", 1) for i in range(n_spam)
    ]


# --------------------------------------------------------------------------- data


def test_parse_reads_label_tab_text_and_rejects_other_lines():
    got = C.parse_sms_spam("ham\thello there\nspam\tWIN now\t!\n\n")
    assert got == [C.Example("hello there", 0), C.Example("WIN now\t!", 1)]
    with pytest.raises(ValueError, match="line 2"):
        C.parse_sms_spam("ham\tok\nmaybe\tnot a label")
    with pytest.raises(ValueError, match="label<TAB>text"):
        C.parse_sms_spam("ham no tab here")


def test_sms_collection_loads_with_its_published_counts():
    full = C.load_sms_spam(deduplicate=False)
    assert len(full) == 5574 and sum(ex.label for ex in full) == 747
    unique = C.load_sms_spam()
    assert len({ex.text for ex in unique}) == len(unique) < len(full)


def test_balanced_split_is_balanced_disjoint_and_deterministic():
    examples = toy_examples(30, 10)
    split = C.balanced_split(examples, (0.6, 0.2, 0.2), seed=3)
    sizes = [len(part) for part in split]
    assert sizes == [12, 4, 4]
    for part in split:
        assert sum(ex.label for ex in part) * 2 == len(part)  # as many spam as ham
    texts = [{ex.text for ex in part} for part in split]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert C.balanced_split(examples, (0.6, 0.2, 0.2), seed=3) == split
    assert C.balanced_split(examples, (0.6, 0.2, 0.2), seed=4) != split
    # every spam example is used: only the larger class is undersampled
    assert sum(ex.label for part in split for ex in part) == 10


@pytest.mark.parametrize("fractions, match", [
    ((0.5, 0.5), "three positive"),
    ((0.7, 0.2, 0.2), "sum to 1"),
    ((1.0, 0.0, 0.0), "positive"),
])
def test_balanced_split_rejects_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        C.balanced_split(toy_examples(), fractions)


def test_balanced_split_needs_two_classes_and_enough_examples():
    with pytest.raises(ValueError, match="two classes"):
        C.balanced_split([C.Example("a", 0), C.Example("b", 0)])
    with pytest.raises(ValueError, match="too few"):
        C.balanced_split(toy_examples(5, 2))


def test_dataset_truncates_appends_end_of_text_and_pads_on_the_right():
    ds = C.ClassificationDataset([C.Example("abcdef", 1), C.Example("hi", 0)], ByteTokenizer(), max_length=4)
    assert ds[0] == ([97, 98, 99, 256], 1)
    assert ds.encode("xyzzy") == [120, 121, 122, 256]
    batch = ds.collate([1, 0])
    assert batch.ids.tolist() == [[104, 105, 256, 256], [97, 98, 99, 256]]
    assert batch.mask.tolist() == [[True, True, True, False], [True] * 4]
    assert batch.labels.tolist() == [0, 1]
    plain = C.ClassificationDataset([C.Example("abcdef", 1)], ByteTokenizer(), max_length=4, append_eot=False)
    assert plain[0] == (list(b"abcd"), 1)
    assert plain.collate([0]).mask.all()


def test_dataset_and_padding_reject_empty_input():
    with pytest.raises(ValueError, match=r"example 1 .*empty"):
        C.ClassificationDataset([C.Example("ok", 0), C.Example("", 0)], ByteTokenizer(), max_length=8)
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        C.ClassificationDataset([C.Example("a", 0)], ByteTokenizer(), max_length=1)
    with pytest.raises(ValueError, match="at least 1"):
        C.encode_for_classification(ByteTokenizer(), "a", 0, append_eot=False)
    with pytest.raises(ValueError, match="empty batch"):
        C.pad_messages([], [], 0)
    with pytest.raises(ValueError, match="is empty"):
        C.pad_messages([[1], []], [0, 1], 0)


# --------------------------------------------------------------------------- pooling


def test_pool_last_reads_each_rows_last_real_position():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(C.pool_last(hidden, mask), torch.stack([hidden[0, 1], hidden[1, 3]]))
    torch.testing.assert_close(C.pool_last(hidden), hidden[:, -1])


@pytest.mark.parametrize("mask, match", [
    (torch.tensor([[False, True, True]]), "right-padded"),
    (torch.tensor([[True, False, True]]), "right-padded"),
    (torch.tensor([[False, False, False]]), "no real token"),
    (torch.tensor([[1, 1, 0]]), "bool"),
])
def test_pool_last_rejects_masks_it_cannot_read(mask, match):
    with pytest.raises(ValueError, match=match):
        C.pool_last(torch.zeros(1, 3, 2), mask)


def test_classifier_output_does_not_depend_on_padding():
    model = tiny_classifier()
    ids = torch.tensor([[5, 80, 17, 200, 9]])
    alone = model(ids)
    for pad_id, extra in [(256, 1), (0, 7), (65, 20)]:
        padded = torch.cat([ids, torch.full((1, extra), pad_id)], dim=1)
        mask = torch.arange(padded.shape[1])[None] < ids.shape[1]
        torch.testing.assert_close(model(padded, mask), alone, rtol=1e-5, atol=1e-6)
    # and inside a batch next to a longer sequence
    batch = C.pad_messages([[5, 80, 17, 200, 9], list(range(30))], [0, 1], pad_id=256)
    torch.testing.assert_close(model(batch.ids, batch.mask)[:1], alone, rtol=1e-5, atol=1e-6)
    # without the mask the model would read a padding position: a different answer
    assert not torch.allclose(model(batch.ids)[:1], alone)


def test_classifier_reads_the_final_hidden_states_and_leaves_the_gpt_a_language_model():
    torch.manual_seed(0)
    gpt = GPT(TINY).eval()
    ids = torch.randint(0, TINY.vocab_size, (3, 6))
    logits_before, _ = gpt(ids)
    model = C.GPTClassifier(gpt).eval()
    # The GPT given to the classifier is not altered: it still predicts the next token.
    torch.testing.assert_close(gpt(ids)[0], logits_before, atol=0, rtol=0)
    # The scores are the head applied to the last position's final hidden state.
    hidden = gpt.hidden_states(ids)
    torch.testing.assert_close(gpt.lm_head(hidden), logits_before)
    torch.testing.assert_close(model(ids), model.head(hidden[:, -1]))
    assert model(torch.zeros(3, 6, dtype=torch.long)).shape == (3, 2)
    assert C.GPTClassifier(GPT(TINY), n_classes=5)(torch.zeros(1, 2, dtype=torch.long)).shape == (1, 5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        C.GPTClassifier(GPT(TINY), n_classes=1)


# --------------------------------------------------------------------------- freezing


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_leaves_exactly_the_intended_parameters_trainable():
    model = tiny_classifier()
    everything = {n for n, _ in model.named_parameters()}
    counts = C.freeze(model, "head")
    assert _trainable_names(model) == {"head.weight", "head.bias"}
    assert counts.trainable == 16 * 2 + 2 and counts.total == model.gpt.num_parameters() + 34

    counts = C.freeze(model, "last_block")
    last = {n for n in everything if n.startswith(("gpt.h.1.", "gpt.ln_f.", "head."))}
    assert _trainable_names(model) == last
    assert not any(n.startswith(("gpt.h.0.", "gpt.wte", "gpt.wpe")) for n in _trainable_names(model))
    assert counts.trainable == sum(p.numel() for n, p in model.named_parameters() if n in last)

    counts = C.freeze(model, "all")
    assert _trainable_names(model) == everything and counts.trainable == counts.total
    assert 0 < C.freeze(model, "head").fraction < C.freeze(model, "last_block").fraction < 1


def test_freeze_rejects_unknown_choices_and_other_models():
    with pytest.raises(ValueError, match="'head', 'last_block', 'all'"):
        C.freeze(tiny_classifier(), "first_block")
    with pytest.raises(TypeError, match="GPTClassifier"):
        C.freeze(GPT(TINY), "head")


def test_frozen_parameters_do_not_change_during_training():
    model = tiny_classifier()
    C.freeze(model, "last_block")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ds = C.ClassificationDataset(toy_examples(8, 8), ByteTokenizer(), max_length=12)
    C.train_classifier(model, ds, max_steps=3, batch_size=4, progress=False)
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == p.requires_grad, name


# --------------------------------------------------------------------------- training and evaluation


def test_training_learns_an_easy_task_and_records_accuracy():
    model = tiny_classifier()
    C.freeze(model, "all")
    examples = toy_examples(40, 40)
    ds = C.ClassificationDataset(examples, ByteTokenizer(), max_length=16)
    history = C.train_classifier(model, ds, ds, max_steps=60, batch_size=16, lr=3e-3,
                                 eval_interval=20, progress=False)
    assert history.eval_steps == [0, 20, 40, 60] and len(history.steps) == 60
    assert history.val_acc[0] < 0.9  # the untrained head is no better than a guess here
    assert history.val_acc[-1] > 0.95
    assert C.accuracy(model, ds) == pytest.approx(history.val_acc[-1])
    label, prob = C.classify_text(model, ds, "WIN a prize 99!")
    assert label == "spam" and 0.5 < prob <= 1.0
    with pytest.raises(ValueError, match="empty"):
        C.classify_text(model, ds, "")


def test_training_refuses_a_fully_frozen_model_and_empty_data():
    model = tiny_classifier()
    for p in model.parameters():
        p.requires_grad_(False)
    ds = C.ClassificationDataset(toy_examples(2, 2), ByteTokenizer(), max_length=8)
    with pytest.raises(ValueError, match="no parameter is trainable"):
        C.train_classifier(model, ds, max_steps=1, progress=False)


def test_predict_and_accuracy_agree_with_the_model():
    model = tiny_classifier()
    ds = C.ClassificationDataset(toy_examples(6, 6), ByteTokenizer(), max_length=10)
    preds, probs = C.predict(model, ds, batch_size=5)
    assert preds.shape == (12,) and probs.shape == (12, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(12))
    expected = (preds == torch.tensor(ds.labels)).float().mean().item()
    assert C.accuracy(model, ds, batch_size=5) == pytest.approx(expected)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    cm = C.confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert cm.tolist() == [[1, 1], [1, 2]]
    with pytest.raises(ValueError, match="same shape"):
        C.confusion_matrix([0, 1], [0])
