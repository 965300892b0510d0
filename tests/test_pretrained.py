"""The byte tokenizer and the cached base model of the fine-tuning chapters."""

import dataclasses
import math
import threading

import pytest
import torch

from llmbook import pretrained as P
from llmbook.checkpoint import save_model
from llmbook.model import GPT
from llmbook.tokenizers import ENDOFTEXT, ByteTokenizer, gpt2_tokenizer, tokenizer_from_dict

# A recipe small enough to train in a second: the machinery is what is under test here.
PHASE = {"max_steps": 3, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "eval_interval": 3,
         "eval_batches": 1, "betas": (0.9, 0.99)}
TINY = dataclasses.replace(
    P.BYTES_RECIPE,
    name="tiny-test",
    corpus="verdict",
    held_out=(),
    model={**P.BYTES_RECIPE.model, "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 32},
    phases=({**PHASE, "context_length": 16}, {**PHASE, "context_length": 32, "max_steps": 2, "eval_interval": 2}),
)


@pytest.mark.parametrize("text", ["", "hello", "naïve café — 東京 🚀", "  spaces\n\ttabs  "])
def test_byte_tokenizer_round_trips_any_text(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_byte_tokenizer_special_token_is_explicit_like_tiktoken():
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(f"a{ENDOFTEXT}b")
    ids = tok.encode(f"a{ENDOFTEXT}b", allowed_special={ENDOFTEXT})
    assert ids == [97, 256, 98]
    assert tok.decode(ids) == f"a{ENDOFTEXT}b"
    assert tok.encode(f"{ENDOFTEXT}", allowed_special="all") == [256]
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


def test_byte_tokenizer_decodes_a_cut_character_without_failing_and_rejects_bad_ids():
    tok = ByteTokenizer()
    cut = tok.encode("é")[:1]
    assert tok.decode(cut) == "\ufffd"
    with pytest.raises(ValueError, match="outside"):
        tok.decode([257])


def test_tokenizers_rebuild_from_their_saved_description():
    assert isinstance(tokenizer_from_dict({"kind": "bytes"}), ByteTokenizer)
    assert tokenizer_from_dict({"kind": "char", "chars": "ba"}).encode("ab") == [0, 1]
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        tokenizer_from_dict({"kind": "morse"})


def test_gpt2_and_byte_tokenizers_share_an_interface():
    for tok in (ByteTokenizer(), gpt2_tokenizer()):
        ids = tok.encode(f"Hi{ENDOFTEXT}", allowed_special={ENDOFTEXT})
        assert ids[-1] == tok.eot_token
        assert tok.decode(ids) == f"Hi{ENDOFTEXT}"
        assert tok.n_vocab > tok.eot_token


def test_recipe_key_changes_with_any_field():
    assert TINY.key() != P.BYTES_RECIPE.key()
    assert dataclasses.replace(TINY, version=TINY.version + 1).key() != TINY.key()
    assert dataclasses.replace(TINY, held_out=("35-0.txt",)).key() != TINY.key()
    assert dataclasses.replace(TINY, cpu_seconds=1).key() == TINY.key()  # only an estimate
    assert TINY.key() == dataclasses.replace(TINY).key()


def test_pretrain_saves_a_file_that_loads_to_the_same_model(tmp_path):
    path = tmp_path / "base.safetensors"
    made = P.pretrain(TINY, progress=False, save_to=path)
    loaded = P.load_pretrained(path)
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert loaded.recipe == TINY
    assert loaded.history.val_loss == made.history.val_loss
    x = torch.tensor([TINY.model["vocab_size"] - 1] + list(b"abc"))[None]
    torch.testing.assert_close(loaded.model(x)[0], made.model.eval()(x)[0])


def test_phases_train_short_then_full_windows_and_one_history_joins_them():
    made = P.pretrain(TINY, progress=False)
    assert made.history.steps == [1, 2, 3, 4, 5]  # the second phase counts on from the first
    assert made.history.eval_steps == [3, 5] and len(made.history.val_loss) == 2
    assert TINY.context_length == 32 and TINY.train_bytes == 3 * 2 * 16 + 2 * 2 * 32


def test_the_held_out_book_is_not_in_the_training_text():
    held = P.held_out_text(P.BYTES_RECIPE)
    corpus = P.corpus_text(P.BYTES_RECIPE)
    assert len(held) > 100_000
    probe = held[50_000:50_200]  # a passage from the middle of the held-out book
    assert probe not in corpus
    assert probe in P.corpus_text(dataclasses.replace(P.BYTES_RECIPE, held_out=()))


def test_bad_recipes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least one training phase"):
        dataclasses.replace(TINY, phases=())
    with pytest.raises(ValueError, match="exceeds the model's n_positions"):
        dataclasses.replace(TINY, phases=({**PHASE, "context_length": 64},))
    with pytest.raises(ValueError, match="context_length"):
        dataclasses.replace(TINY, phases=(PHASE,))
    with pytest.raises(ValueError, match="held_out names"):
        dataclasses.replace(TINY, held_out=("no-such-book.txt",))


def test_ngram_baselines_know_what_they_can_know():
    cycle = torch.arange(10).repeat(200)  # 0 1 2 ... 9 0 1 ...: each byte predicts the next exactly
    assert P.ngram_cross_entropy(cycle, cycle, order=2, vocab_size=10, alpha=1e-6) < 1e-3
    assert P.ngram_cross_entropy(cycle, cycle, order=1, vocab_size=10) == pytest.approx(math.log(10), rel=1e-3)
    with pytest.raises(ValueError, match="order"):
        P.ngram_cross_entropy(cycle, cycle, order=3)


def test_load_pretrained_refuses_a_plain_model_file(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_model(GPT(TINY.gpt_config()), path)
    with pytest.raises(ValueError, match="no tokenizer"):
        P.load_pretrained(path)


def test_base_model_trains_once_then_loads_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(P, "BYTES_RECIPE", TINY)
    calls = []
    real = P.pretrain
    monkeypatch.setattr(P, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = P.base_model("cpu", progress=False)
    assert first.notes["cached"] is False and P.cache_path(TINY).is_file()
    second = P.base_model("cpu", progress=False)
    assert second.notes["cached"] is True and len(calls) == 1
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    P.base_model("cpu", retrain=True, progress=False)
    assert len(calls) == 2


def test_base_model_replaces_a_damaged_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(P, "BYTES_RECIPE", TINY)
    path = P.cache_path(TINY)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    made = P.base_model("cpu", progress=False)
    assert made.notes["cached"] is False
    assert P.load_pretrained(path).recipe == TINY


def test_two_simultaneous_first_calls_train_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(P, "BYTES_RECIPE", TINY)
    calls = []
    real = P.pretrain
    monkeypatch.setattr(P, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = []
    threads = [threading.Thread(target=lambda: results.append(P.base_model("cpu", progress=False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(r.notes["cached"] for r in results) == [False, True]


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="profile must be"):
        P.base_model("tpu")


def test_tiling_copies_the_learned_positions_over_the_later_ones():
    torch.manual_seed(0)
    model = GPT(TINY.gpt_config())  # 32 positions
    before = model.wpe.weight.detach().clone()
    P.tile_position_embeddings(model, 12)
    after = model.wpe.weight.detach()
    assert torch.equal(after[:12], before[:12])  # the trained positions are kept
    for position in (12, 23, 24, 31):
        assert torch.equal(after[position], before[position % 12])
    with pytest.raises(ValueError, match="between 1 and 31"):
        P.tile_position_embeddings(model, 32)


def test_a_tiling_phase_starts_from_copies_of_the_first_phase():
    recipe = dataclasses.replace(TINY, phases=({**PHASE, "context_length": 16},
                                               {**PHASE, "context_length": 32, "tile_positions": True,
                                                "max_steps": 1, "lr": 1e-9}))
    made = P.pretrain(recipe, progress=False)
    wpe = made.model.wpe.weight.detach()
    torch.testing.assert_close(wpe[16:], wpe[:16], atol=1e-6, rtol=0)  # one tiny step after the copy
