"""llmbook.embeddings: vocabulary, subsampling, skip-gram pairs, SGNS, analogies; the explorer."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from llmbook.embeddings import (
    AnalogyScore,
    NegativeSampler,
    SkipGram,
    Vocabulary,
    analogy,
    analogy_rank,
    evaluate_analogies,
    keep_probability,
    load_analogies,
    nearest,
    sgns_loss,
    skipgram_pairs,
    subsample,
    train_skipgram,
    words_of,
)


def test_words_of_lowercases_and_splits_on_anything_but_letters() -> None:
    assert words_of("Don't STOP, 3 times!\nEnd") == ["don", "t", "stop", "times", "end"]


def test_vocabulary_orders_by_frequency_caps_and_encodes() -> None:
    tokens = ["b", "a", "b", "c", "b", "a", "d"]
    vocab = Vocabulary.build(tokens, max_size=3)
    assert vocab.words == ["b", "a", "c"] and vocab.counts.tolist() == [3, 2, 1]
    assert vocab["a"] == 1 and "d" not in vocab and len(vocab) == 3
    assert vocab.encode(tokens).tolist() == [0, 1, 0, 2, 0, 1]  # "d" is dropped
    assert Vocabulary.build(tokens, min_count=2).words == ["b", "a"]
    with pytest.raises(KeyError, match="not in the vocabulary"):
        vocab["zebra"]
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(tokens, min_count=10)


def test_subsampling_drops_frequent_words_and_keeps_rare_ones() -> None:
    counts = torch.tensor([9000, 900, 90, 10])
    keep = keep_probability(counts, threshold=1e-2)
    assert keep[-1] == 1.0 and keep[0] < keep[1] < 1.0
    assert math.isclose(float(keep[0]), math.sqrt(1e-2 / 0.9), rel_tol=1e-5)
    ids = torch.repeat_interleave(torch.arange(4), counts)
    kept = subsample(ids, counts, 1e-2, torch.Generator().manual_seed(0))
    seen = Counter(kept.tolist())
    assert seen[3] == 10 and seen[2] == 90  # rare words are never dropped
    assert abs(seen[0] / 9000 - float(keep[0])) < 0.03
    again = subsample(ids, counts, 1e-2, torch.Generator().manual_seed(0))
    assert torch.equal(kept, again)


def _brute_force_pairs(ids: list[int], window: int) -> Counter:
    return Counter((ids[i], ids[j]) for i in range(len(ids))
                   for j in range(max(0, i - window), min(len(ids), i + window + 1)) if j != i)


@pytest.mark.parametrize("n, window", [(1, 2), (2, 1), (7, 2), (10, 3), (5, 9)])
def test_fixed_window_pairs_are_all_neighbours_both_ways(n, window) -> None:
    ids = torch.arange(100, 100 + n)
    centers, contexts = skipgram_pairs(ids, window)
    assert Counter(zip(centers.tolist(), contexts.tolist())) == _brute_force_pairs(ids.tolist(), window)


def test_dynamic_window_keeps_near_pairs_and_some_far_ones() -> None:
    ids = torch.arange(2000)
    centers, contexts = skipgram_pairs(ids, 4, torch.Generator().manual_seed(1))
    pairs = set(zip(centers.tolist(), contexts.tolist()))
    assert pairs <= set(_brute_force_pairs(ids.tolist(), 4))
    distance = Counter(abs(c - x) for c, x in pairs)
    assert distance[1] == 2 * 1999  # every center keeps its nearest neighbours
    assert distance[1] > distance[2] > distance[3] > distance[4] > 0
    assert 0.2 < distance[4] / distance[1] < 0.3  # window 4 is drawn a quarter of the time
    with pytest.raises(ValueError, match="window"):
        skipgram_pairs(ids, 0)


def test_negative_sampler_follows_counts_to_the_three_quarters() -> None:
    counts = torch.tensor([1000, 100, 10, 1])
    draws = NegativeSampler(counts).sample((200_000,), torch.Generator().manual_seed(0))
    expected = counts.double() ** 0.75 / (counts.double() ** 0.75).sum()
    seen = torch.bincount(draws, minlength=4).double() / len(draws)
    torch.testing.assert_close(seen, expected, atol=0.005, rtol=0.05)


def test_sgns_loss_matches_the_formula_and_checks_shapes() -> None:
    gen = torch.Generator().manual_seed(0)
    v, u, n = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen), torch.randn(6, 3, 4, generator=gen)
    by_hand = -sum(math.log(torch.sigmoid(v[i] @ u[i])) + sum(math.log(torch.sigmoid(-v[i] @ n[i, k]))
                                                            for k in range(3)) for i in range(6)) / 6
    assert math.isclose(float(sgns_loss(v, u, n)), by_hand, rel_tol=1e-5)
    zeros = sgns_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 5, 4))
    assert math.isclose(float(zeros), 6 * math.log(2), rel_tol=1e-6)  # chance: σ(0) = 1/2 six times
    with pytest.raises(ValueError, match="negatives"):
        sgns_loss(v, u, n[0])


def test_skipgram_model_looks_up_both_tables() -> None:
    model = SkipGram(10, 4)
    with torch.no_grad():
        model.context.weight.normal_()
    c, x, n = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([[5, 6], [7, 8]])
    expected = sgns_loss(model.center.weight[c], model.context.weight[x], model.context.weight[n])
    torch.testing.assert_close(model(c, x, n), expected)
    assert model.vectors().shape == (10, 4) and not model.vectors().requires_grad


def test_training_puts_words_that_share_contexts_together() -> None:
    gen = torch.Generator().manual_seed(0)
    # Two "topics": words 0-4 only ever appear among themselves, words 5-9 likewise.
    sentences = [torch.randint(0, 5, (20,), generator=gen) + 5 * (i % 2) for i in range(300)]
    ids = torch.cat(sentences)
    counts = torch.bincount(ids, minlength=10)
    model = SkipGram(10, 8)
    losses = train_skipgram(model, ids, counts, epochs=4, window=2, batch_size=256, lr=0.02,
                            threshold=1.0, progress=False)
    assert sum(losses[-10:]) / 10 < 0.8 * losses[0]
    sims = F.normalize(model.vectors(), dim=-1) @ F.normalize(model.vectors(), dim=-1).T
    same = (sims[:5, :5].sum() - 5) / 20
    across = sims[:5, 5:].mean()
    assert same > across + 0.5


def test_training_stops_with_a_clear_error_when_it_diverges() -> None:
    ids = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="lower lr"):
        train_skipgram(SkipGram(10, 8), ids, torch.bincount(ids, minlength=10), epochs=3,
                       batch_size=512, lr=1e4, threshold=1.0, progress=False)


@pytest.fixture
def planted() -> tuple[torch.Tensor, Vocabulary]:
    words = ["king", "queen", "man", "woman", "apple", "pear", "boy", "girl"]
    royal, female, fruit, young = torch.eye(4)
    rows = {"king": royal, "queen": royal + female, "man": 0 * royal, "woman": female,
            "apple": fruit, "pear": fruit + 0.1 * female, "boy": young, "girl": young + female}
    noise = torch.randn(len(words), 4, generator=torch.Generator().manual_seed(0)) * 0.05
    vectors = torch.stack([rows[w] + 0.3 for w in words]) + noise
    return vectors, Vocabulary(words, [10] * len(words))


def test_analogy_excludes_the_query_words(planted) -> None:
    vectors, vocab = planted
    answers = analogy(vectors, vocab, "man", "king", "woman", k=3)
    assert answers[0][0] == "queen" and not {"man", "king", "woman"} & {w for w, _ in answers}
    assert analogy_rank(vectors, vocab, "man", "king", "woman", "queen") == 1
    assert analogy_rank(vectors, vocab, "boy", "girl", "man", "woman") == 1
    neighbours = nearest(vectors, vocab, "apple", k=2)
    assert neighbours[0][0] == "pear" and "apple" not in dict(neighbours)
    assert len(nearest(vectors, vocab, "apple", k=100)) == len(vocab) - 1


def test_load_analogies_reads_sections(tmp_path) -> None:
    path = tmp_path / "q.txt"
    path.write_text(": family\nMan King Woman Queen\nboy girl man woman\n: fruit\napple pear boy girl\n")
    sections = load_analogies(path)
    assert sections == {"family": [("man", "king", "woman", "queen"), ("boy", "girl", "man", "woman")],
                        "fruit": [("apple", "pear", "boy", "girl")]}
    path.write_text(": s\nonly three words\n")
    with pytest.raises(ValueError, match="four words"):
        load_analogies(path)


def test_evaluate_analogies_counts_coverage_and_hits(planted) -> None:
    vectors, vocab = planted
    sections = {"family": [("man", "king", "woman", "queen"), ("boy", "girl", "man", "woman"),
                           ("man", "king", "woman", "duchess")],
                "empty": [("paris", "france", "rome", "italy")]}
    scores = evaluate_analogies(vectors, vocab, sections, k=2)
    assert scores["family"] == AnalogyScore(questions=3, covered=2, top1=2, topk=2)
    assert scores["empty"].covered == 0 and scores["empty"].accuracy() == 0.0
    assert scores["family"].coverage == pytest.approx(2 / 3)
    total = scores["family"] + scores["empty"]
    assert (total.questions, total.covered, total.accuracy(1)) == (4, 2, 1.0)
    baseline = evaluate_analogies(vectors, vocab, sections, method="nearest_c")
    assert baseline["family"].top1 <= 2
    with pytest.raises(ValueError, match="method"):
        evaluate_analogies(vectors, vocab, sections, method="cosmul")


def test_the_real_analogy_file_has_fourteen_sections() -> None:
    pytest.importorskip("llmbook.data")
    from llmbook.data import DataNotFoundError

    try:
        sections = load_analogies()
    except DataNotFoundError:
        pytest.skip("the analogy file is not available offline")
    assert len(sections) == 14 and sum(map(len, sections.values())) == 19544
    assert sections["family"][0] == ("boy", "girl", "brother", "sister")


def test_analogy_explorer_redraws_and_reports_unknown_words(planted) -> None:
    pytest.importorskip("ipywidgets")
    from llmbook.widgets import AnalogyExplorer

    vectors, vocab = planted
    explorer = AnalogyExplorer(vectors, vocab, word="apple", k=3)
    answers, neighbours = explorer.results()
    assert answers[0][0] == "queen" and neighbours[0][0] == "pear"
    assert "queen" in [t.get_text() for t in explorer.figure.axes[0].get_yticklabels()]
    explorer.b.value = "zebra"  # an edited box redraws the figure
    assert explorer.results()[0] == []
    assert "zebra" in explorer.figure.axes[0].get_title()
    renders: list[int] = []
    original = explorer.render
    explorer.render = lambda: (renders.append(1), original())[1]
    explorer.show(a="boy", b="girl", c="man", word="nothing")  # four boxes, one redraw
    assert len(renders) == 1
    assert explorer.results()[0][0][0] == "woman"
    assert "not in the vocabulary" in explorer.figure.axes[1].get_title()
    with pytest.raises(ValueError, match="one row per vocabulary word"):
        AnalogyExplorer(vectors[:3], vocab)
