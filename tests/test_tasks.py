"""llmbook.tasks: the long-range recall task puts the fact exactly where it says it does."""

from __future__ import annotations

import pytest
import torch

from llmbook.tasks import NAMES, RecallTask


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shape_vocabulary_and_chance() -> None:
    task = RecallTask(max_distance=20)
    assert task.vocab[: len(NAMES)] == list(NAMES)
    assert task.name_ids.tolist() == list(range(len(NAMES)))
    assert len(set(task.vocab)) == task.vocab_size
    assert task.chance == pytest.approx(1 / len(NAMES))
    assert task.fact_length == 5 and task.name_offset == 3 and task.question_length == 4
    assert task.min_distance == 6
    assert task.seq_len == 20 + 3
    batch = task.sample(7, generator=_gen())
    assert batch.tokens.shape == (7, task.seq_len) and batch.tokens.dtype == torch.long
    assert batch.answers.shape == (7,) and batch.distances.shape == (7,)
    assert int(batch.tokens.min()) >= 0 and int(batch.tokens.max()) < task.vocab_size


@pytest.mark.parametrize("distance", [6, 7, 13, 40])
def test_name_sits_exactly_distance_tokens_back(distance: int) -> None:
    task = RecallTask(max_distance=40)
    batch = task.sample(50, distance, _gen(distance))
    assert torch.all(batch.distances == distance)
    name_position = task.seq_len - distance
    assert torch.equal(batch.tokens[:, name_position], batch.answers)
    for tokens, answer in zip(batch.tokens[:5], batch.answers[:5]):
        words = task.decode(tokens).split()
        fact = words[name_position - task.name_offset : name_position - task.name_offset + task.fact_length]
        question = words[-task.question_length :]
        roles = {q: f for f, q in task.roles}
        assert " ".join(fact) == roles[" ".join(question)].format(name=task.names[answer])


def test_names_appear_only_in_the_fact() -> None:
    task = RecallTask(max_distance=64)
    batch = task.sample(200, generator=_gen(1))
    is_name = batch.tokens < len(task.names)
    assert torch.equal(is_name.sum(dim=1), torch.ones(200, dtype=torch.long))


def test_answers_and_roles_are_spread_evenly() -> None:
    task = RecallTask(max_distance=16, names=NAMES[:4])
    batch = task.sample(4000, generator=_gen(2))
    counts = torch.bincount(batch.answers, minlength=4).float() / 4000
    assert torch.all((counts - 0.25).abs() < 0.03)
    questions = {task.decode(t[-task.question_length :]) for t in batch.tokens}
    assert questions == {q for _, q in task.roles}


def test_shorter_length_cuts_only_the_filler_in_front() -> None:
    task = RecallTask(max_distance=50)
    short = task.sample(10, 9, _gen(3), length=9 + task.name_offset)
    assert short.tokens.shape == (10, 12)
    # nothing is left in front of the fact: it starts the sequence
    assert torch.equal(short.tokens[:, 0], torch.full((10,), task.stoi["the"]))
    assert torch.equal(short.tokens[:, task.name_offset], short.answers)


def test_uniform_and_log_uniform_distances_cover_the_range() -> None:
    task = RecallTask(max_distance=128)
    for log_uniform in (False, True):
        d = task.random_distances(20000, _gen(4), log_uniform=log_uniform)
        assert int(d.min()) == task.min_distance and int(d.max()) == 128
    log_d = task.random_distances(20000, _gen(5), log_uniform=True)
    assert (log_d < 16).float().mean() > 0.25          # short distances are common
    uniform = task.sample(5000, generator=_gen(6)).distances
    assert abs(uniform.float().mean().item() - (6 + 128) / 2) < 2


def test_mixed_distances_in_one_batch() -> None:
    task = RecallTask(max_distance=30)
    distances = torch.tensor([6, 10, 30, 17])
    batch = task.sample(4, distances, _gen(7))
    positions = task.seq_len - distances
    assert torch.equal(batch.tokens[torch.arange(4), positions], batch.answers)


@pytest.mark.parametrize("n_facts, max_distance", [(2, 20), (3, 12), (4, 6), (4, 60)])
def test_distractor_facts_never_overlap(n_facts: int, max_distance: int) -> None:
    task = RecallTask(max_distance=max_distance, n_facts=n_facts)
    batch = task.sample(300, generator=_gen(n_facts))
    for tokens, answer, distance in zip(batch.tokens, batch.answers, batch.distances):
        words = task.decode(tokens).split()
        names = [(i, w) for i, w in enumerate(words) if w in task.names]
        assert len(names) == n_facts
        assert len({w for _, w in names}) == n_facts           # distinct people
        # every name sits inside a complete, well-formed fact
        facts = set()
        for i, w in names:
            fact = words[i - task.name_offset : i - task.name_offset + task.fact_length]
            assert " ".join(fact) in {f.format(name=w) for f, _ in task.roles}
            facts.add(" ".join(fact).replace(w, "{name}"))
        assert len(facts) == n_facts                           # distinct roles
        # the queried name is where the distance says, and the question asks for its role
        queried = len(words) - int(distance)
        assert words[queried] == task.names[answer]
        role = " ".join(words[queried - task.name_offset : queried - task.name_offset + task.fact_length])
        question = " ".join(words[-task.question_length :])
        assert {q: f for f, q in task.roles}[question].format(name=words[queried]) == role


def test_sampling_is_reproducible() -> None:
    task = RecallTask(max_distance=32, n_facts=2)
    a, b = task.sample(20, generator=_gen(8)), task.sample(20, generator=_gen(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_accuracy_counts_only_names() -> None:
    task = RecallTask(max_distance=10, names=NAMES[:4])
    answers = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, task.vocab_size)
    logits[torch.arange(4), answers] = 1.0
    logits[:, task.stoi["the"]] = 100.0          # a non-name word scores highest: ignored
    assert task.accuracy(logits, answers) == 1.0
    logits[0, 1] = 5.0
    assert task.accuracy(logits, answers) == 0.75
    with pytest.raises(ValueError, match="vocab_size"):
        task.accuracy(torch.zeros(4, 3), answers)
    with pytest.raises(ValueError, match="answers"):
        task.accuracy(logits, answers[:2])


def test_encode_decode_round_trip() -> None:
    task = RecallTask(max_distance=10)
    text = "the queen is rose . old day the king's wife is"
    assert task.decode(task.encode(text)) == text
    with pytest.raises(ValueError, match="not a word of this task"):
        task.encode("the queen is bob")


@pytest.mark.parametrize("kwargs, message", [
    ({"max_distance": 5}, "min_distance"),
    ({"n_facts": 0}, "n_facts"),
    ({"n_facts": 5}, "n_facts"),
    ({"names": ("rose",)}, "two distinct names"),
    ({"names": ("rose", "rose")}, "two distinct names"),
    ({"filler": ()}, "filler"),
    ({"filler": ("old", "queen")}, "queen"),
    ({"filler": ("old", "rose")}, "rose"),
    ({"roles": (("the queen is rose .", "who ?"),)}, "{name}"),
    ({"roles": (("the queen is {name} .", "the king's wife is"), ("a {name} .", "who is it ?"))}, "same number"),
    ({"mention_rate": 1.0}, "mention_rate"),
])
def test_bad_settings_are_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        RecallTask(**kwargs)


def test_bad_sample_arguments_are_explained() -> None:
    task = RecallTask(max_distance=20)
    with pytest.raises(ValueError, match="between min_distance=6 and max_distance=20"):
        task.sample(3, 21)
    with pytest.raises(ValueError, match="between min_distance"):
        task.sample(3, 5)
    with pytest.raises(ValueError, match="positive integer"):
        task.sample(0)
    with pytest.raises(ValueError, match="length must be"):
        task.sample(3, 10, length=12)


def test_mentions_put_other_names_in_the_filler() -> None:
    task = RecallTask(max_distance=100, mention_rate=0.1)
    batch = task.sample(100, 100, _gen(9))
    names_per_example = (batch.tokens < len(task.names)).sum(dim=1).float()
    assert names_per_example.mean() > 5                        # about 10 mentions + the fact
    assert torch.equal(batch.tokens[:, task.seq_len - 100], batch.answers)
