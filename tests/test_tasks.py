"""llmbook.tasks: the long-range recall task puts the fact exactly where it says it does; the
instruction tasks answer correctly and keep their held-out inputs and phrasings out of training."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from llmbook.finetune import format_prompt
from llmbook.tasks import (
    INSTRUCTION_TASKS,
    NAMES,
    InstructionTask,
    RecallTask,
    TaskSplit,
    accuracy_by_task,
    instruction_tasks,
    number_in_words,
    solve,
)


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


# ------------------------------------------------------------------ instruction tasks

@pytest.mark.parametrize("task, text, answer", [
    ("reverse", "pelk", "klep"), ("upper", "pelk", "PELK"), ("length", "ravomes", "7"),
    ("add", "4 and 7", "11"), ("add", "0 and 0", "0"), ("in_words", "42", "forty-two"),
    ("in_words", "0", "zero"), ("in_words", "13", "thirteen"), ("in_words", "90", "ninety"),
])
def test_answers_are_computed_from_the_input(task: str, text: str, answer: str) -> None:
    assert solve(task, text) == answer


def test_number_in_words_covers_0_to_99_once_each() -> None:
    words = [number_in_words(n) for n in range(100)]
    assert len(set(words)) == 100 and words[21] == "twenty-one" and words[99] == "ninety-nine"
    with pytest.raises(ValueError, match="0 to 99"):
        number_in_words(100)


def test_every_record_is_answered_correctly_and_phrased_by_its_task() -> None:
    split = instruction_tasks(n_train=50, n_val=5, n_test=10, seed=3)
    for part in (split.train, split.val, split.test, split.test_unseen):
        for r in part:
            assert r["output"] == solve(r["task"], r["input"])
            assert r["instruction"] in INSTRUCTION_TASKS[r["task"]].phrasings
    assert len(split.train) == 50 * len(INSTRUCTION_TASKS) and len(split.test_unseen) == 10 * len(INSTRUCTION_TASKS)


def test_test_inputs_and_unseen_phrasings_never_occur_in_training() -> None:
    split = instruction_tasks(n_train=300, n_val=20, n_test=100, seed=1)
    seen_inputs = {(r["task"], r["input"]) for r in split.train + split.val}
    seen_phrasings = {r["instruction"] for r in split.train + split.val}
    for r in split.test + split.test_unseen:
        assert (r["task"], r["input"]) not in seen_inputs
    for task, unseen in split.unseen.items():
        assert len(unseen) == 1 and not set(unseen) & seen_phrasings
        assert {r["instruction"] for r in split.test_unseen if r["task"] == task} == set(unseen)
        assert {r["instruction"] for r in split.test if r["task"] == task} <= seen_phrasings


def test_the_input_sits_at_the_same_place_for_every_phrasing() -> None:
    for task in INSTRUCTION_TASKS.values():
        starts = {format_prompt({"instruction": p, "input": task.example}).index(task.example)
                  for p in task.phrasings}
        assert len(starts) == 1, task.name


def test_instruction_tasks_are_reproducible_and_seeded() -> None:
    a = instruction_tasks(n_train=20, n_val=2, n_test=5, seed=7, tasks=["reverse", "length"])
    assert a == instruction_tasks(n_train=20, n_val=2, n_test=5, seed=7, tasks=["reverse", "length"])
    assert a.train != instruction_tasks(n_train=20, n_val=2, n_test=5, seed=8, tasks=["reverse", "length"]).train
    assert {r["task"] for r in a.train} == {"reverse", "length"}


def test_one_task_alone_is_the_same_data_whatever_else_exists() -> None:
    # chapter 11 trains on the length task alone: its records depend only on the seed
    a = instruction_tasks(n_train=30, n_val=3, n_test=30, seed=0, tasks=["length"])
    assert [len(r["input"]) for r in a.train] == [int(r["output"]) for r in a.train]
    assert all(3 <= int(r["output"]) <= 8 for r in a.test)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tasks=["revers"]), "unknown tasks"),
    (dict(tasks=["length", "length"]), "once"),
    (dict(n_train=0), "n_train"),
    (dict(unseen_phrasings=4), "unseen_phrasings"),
    (dict(held_out=1.0), "held_out"),
])
def test_bad_instruction_task_settings_are_explained(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        instruction_tasks(**kwargs)


def test_phrasings_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        InstructionTask("x", "x", ("Short.", "Much longer."), "a")


def test_accuracy_by_task_is_exact_per_task_and_overall() -> None:
    records = [{"task": "upper", "output": "PELK"}, {"task": "upper", "output": "AB"},
               {"task": "length", "output": "4"}]
    got = accuracy_by_task(records, [" PELK\n", "ab", "4"])
    assert got == {"upper": 0.5, "length": 1.0, "all": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="pair up"):
        accuracy_by_task(records, ["x"])


def test_other_wordings_change_only_the_instructions() -> None:
    # as many wordings as the task's own: the same random draws, so the same inputs
    wordings = ["What is the length of the word?", "Give the number of letters.", "Count them.",
                "How long is it?"]
    own = instruction_tasks(n_train=20, n_val=2, n_test=5, seed=0, tasks=["length"])
    other = instruction_tasks(n_train=20, n_val=2, n_test=5, seed=0, tasks=["length"],
                              phrasings={"length": wordings})
    assert [r["input"] for r in other.train] == [r["input"] for r in own.train]
    assert {r["instruction"] for r in other.train + other.test_unseen} <= set(wordings)
    assert len(other.unseen["length"]) == 1 and other.unseen["length"][0] in wordings
    for bad in ("Count them.", ["Count them.", "Count them."], ["Count them.", " "]):
        with pytest.raises(ValueError, match="at least two distinct"):
            instruction_tasks(tasks=["length"], phrasings={"length": bad})
    with pytest.raises(ValueError, match="not among the tasks"):
        instruction_tasks(tasks=["length"], phrasings={"upper": wordings})


def _fingerprint(split: TaskSplit) -> str:
    return hashlib.sha256(json.dumps(split._asdict(), sort_keys=True).encode()).hexdigest()[:16]


def test_the_chapters_task_data_is_pinned() -> None:
    # Chapters 10 and 11 assert claims checked on seeds 0-2 with exactly these records; a
    # change to the tasks (a phrasing, a draw) silently invalidates those checks. If you
    # change the data on purpose, re-measure both chapters over seeds 0-2, then update.
    chapter_10 = instruction_tasks(n_train=400, n_val=10, n_test=40, seed=0,
                                   tasks=("reverse", "upper", "length"))
    wordings = ["What is the length of the word?", "How many letters does the word have?",
                "Count the letters in the word.", "Give the number of letters."]
    chapter_11 = instruction_tasks(n_train=300, n_val=5, n_test=200, seed=0, tasks=["length"],
                                   phrasings={"length": wordings})
    assert _fingerprint(chapter_10) == "a367a84229132188"
    assert _fingerprint(chapter_11) == "a1ff570be0c53538"
