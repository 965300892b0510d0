"""Synthetic tasks with a known answer, for measuring what a model can use from its context
(chapter 4 introduces them; chapter 10 adds instructions whose answers are computed from
their input; chapter 11 uses them again for in-context learning).

The long-range recall task states a fact early ("the queen is rose ."), fills the
context with unrelated words, and then asks about the fact ("the king's wife is"). The
answer is one of ``K`` names, so a model that cannot see the fact is right with
probability 1/K, and the *distance* between the name and the answer is a number we
choose. That turns "how far back can this model remember?" into a measurement: sweep
the distance and plot the accuracy.

Every sequence has the same length, so examples with different distances share a batch:
the context before the fact is filler too. Optional distractor facts (``n_facts > 1``)
give other people other roles, so that a model must bind the name to the right role
rather than copy the only name it saw.

Words are tokens, and the vocabulary is small and fixed (``RecallTask.vocab``), so that
the models that learn the task can be tiny.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

NAMES: tuple[str, ...] = ("rose", "anna", "mary", "ella", "lily", "ruth", "jane", "emma")
"""The possible answers; chance accuracy is 1 / len(names)."""

# (fact, question): the fact names a role, and the question asks for it in other words,
# so answering means knowing which fact the question is about, not copying a neighbour.
ROLES: tuple[tuple[str, str], ...] = (
    ("the queen is {name} .", "the king's wife is"),
    ("the cook is {name} .", "the castle's baker is"),
    ("the guard is {name} .", "the gate's keeper is"),
    ("the doctor is {name} .", "the palace's healer is"),
)

FILLER: tuple[str, ...] = (
    "a", "and", "it", "was", "of", "to", "in", "on", "that", "day", "night", "rain",
    "old", "green", "house", "river", "song", "light", "walked", "slowly", "garden",
    "bird", "stone", "road",
)
"""Words that fill the gap; none of them is a name or a word of a fact or question."""


class RecallBatch(NamedTuple):
    """A batch of recall examples: ``tokens`` (n, seq_len), the ``answers`` (n,) as token
    ids of names, and each example's ``distances`` (n,) from the name to the answer."""

    tokens: torch.Tensor
    answers: torch.Tensor
    distances: torch.Tensor


@dataclass(frozen=True)
class RecallTask:
    """Remember a fact across a gap of filler words and answer a question about it.

    An example with distance 10 (``n_facts=1``)::

        ... road bird the queen is rose . old day rain in the king's wife is

    and the answer, the token that should come next, is ``rose``. The *distance* is how
    many tokens back the name is from the answer: here ``rose`` is the 10th token from
    the end. The smallest possible distance, ``min_distance``, has no filler at all
    between the fact and the question.
    """

    max_distance: int = 128
    n_facts: int = 1
    names: tuple[str, ...] = NAMES
    roles: tuple[tuple[str, str], ...] = ROLES
    filler: tuple[str, ...] = FILLER
    mention_rate: float = 0.0

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names) or len(self.names) < 2:
            raise ValueError(f"a recall task needs at least two distinct names, got {self.names!r}")
        if not self.filler:
            raise ValueError("a recall task needs at least one filler word")
        if not 0.0 <= self.mention_rate < 1.0:
            raise ValueError(f"mention_rate is a probability in [0, 1), got {self.mention_rate!r}")
        if not self.roles:
            raise ValueError("a recall task needs at least one (fact, question) role")
        facts = [f.split() for f, _ in self.roles]
        if any(f.count("{name}") != 1 for f in facts):
            raise ValueError("every fact must contain '{name}' exactly once, as a word of its own")
        if len({len(f) for f in facts}) != 1 or len({f.index("{name}") for f in facts}) != 1:
            raise ValueError("all facts must have the same number of words, with {name} at the same place")
        if len({len(q.split()) for _, q in self.roles}) != 1:
            raise ValueError("all questions must have the same number of words")
        if not 1 <= self.n_facts <= min(len(self.roles), len(self.names)):
            raise ValueError(
                f"n_facts must be between 1 and {min(len(self.roles), len(self.names))} (each fact "
                f"needs its own role and name), got {self.n_facts!r}"
            )
        if not isinstance(self.max_distance, int) or self.max_distance < self.min_distance:
            raise ValueError(
                f"max_distance must be an integer of at least min_distance={self.min_distance} (the "
                f"name, the rest of its fact and the question), got {self.max_distance!r}"
            )
        clash = (set(self.names) | self._role_words()) & set(self.filler)
        if clash:
            raise ValueError(f"filler words must not be names or words of a fact; remove {sorted(clash)}")

    # ------------------------------------------------------------------ shape and vocabulary

    def _role_words(self) -> set[str]:
        return {w for f, q in self.roles for w in f.split() + q.split()} - {"{name}"}

    @property
    def vocab(self) -> list[str]:
        """Every word of the task, in a fixed order: the names first (ids 0 .. K-1), then the rest."""
        seen: dict[str, None] = dict.fromkeys(self.names)
        for fact, question in self.roles:
            seen.update(dict.fromkeys(w for w in fact.split() + question.split() if w != "{name}"))
        seen.update(dict.fromkeys(self.filler))
        return list(seen)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def stoi(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    @property
    def name_ids(self) -> torch.Tensor:
        """Token ids of the names, the only possible answers: 0 .. K-1."""
        return torch.arange(len(self.names))

    @property
    def chance(self) -> float:
        """Accuracy of a guess among the names: 1 / K."""
        return 1.0 / len(self.names)

    @property
    def fact_length(self) -> int:
        """Tokens in one fact ("the queen is rose ." is 5)."""
        return len(self.roles[0][0].split())

    @property
    def name_offset(self) -> int:
        """Where the name sits inside a fact (3 in "the queen is rose .")."""
        return self.roles[0][0].split().index("{name}")

    @property
    def question_length(self) -> int:
        return len(self.roles[0][1].split())

    @property
    def min_distance(self) -> int:
        """The shortest distance: the name, the rest of its fact, the question, no filler."""
        return self.fact_length - self.name_offset + self.question_length

    @property
    def seq_len(self) -> int:
        """Tokens per example: room for the longest distance and for every other fact."""
        return self.max_distance + self.name_offset + (self.n_facts - 1) * self.fact_length

    def encode(self, text: str) -> list[int]:
        """Words separated by spaces to token ids."""
        stoi = self.stoi
        try:
            return [stoi[w] for w in text.split()]
        except KeyError as err:
            raise ValueError(f"{err.args[0]!r} is not a word of this task; its vocabulary is {self.vocab}") from None

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        vocab = self.vocab
        return " ".join(vocab[int(i)] for i in ids)

    # ------------------------------------------------------------------ sampling

    def random_distances(self, n: int, generator: torch.Generator, log_uniform: bool = False) -> torch.Tensor:
        """``n`` distances from ``min_distance`` to ``max_distance``, uniform or log-uniform.

        Log-uniform gives as many examples between 8 and 16 as between 64 and 128: short
        distances are common, which helps a model that must first learn the easy cases.
        """
        lo, hi = self.min_distance, self.max_distance
        if not log_uniform:
            return torch.randint(lo, hi + 1, (n,), generator=generator)
        u = torch.rand(n, generator=generator)
        d = torch.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))).floor().long()
        return d.clamp(lo, hi)

    def sample(
        self,
        n: int,
        distance: int | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        length: int | None = None,
    ) -> RecallBatch:
        """``n`` examples. ``distance``: one for all, a tensor of ``n``, or None for
        distances drawn uniformly over the whole range (training on every distance).

        ``length`` (default ``seq_len``) shortens the sequences, down to the longest
        distance in the batch plus room for the other facts: a batch of short distances
        then costs a model less to read. Only filler in front of the facts is cut, so the
        task is the same; only the random draws differ.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if distance is None:
            dist = self.random_distances(n, g)
        else:
            dist = torch.as_tensor(distance, dtype=torch.long).expand(n).clone()
        if int(dist.min()) < self.min_distance or int(dist.max()) > self.max_distance:
            raise ValueError(
                f"distances must lie between min_distance={self.min_distance} and max_distance="
                f"{self.max_distance}, got {int(dist.min())} to {int(dist.max())}"
            )
        stoi, F, Q = self.stoi, self.fact_length, self.question_length
        shortest = int(dist.max()) + self.name_offset + (self.n_facts - 1) * F
        L = self.seq_len if length is None else length
        if not isinstance(L, int) or not shortest <= L <= self.seq_len:
            raise ValueError(
                f"length must be an integer from {shortest} (the longest distance in the batch plus "
                f"room for every fact) to seq_len={self.seq_len}, got {length!r}"
            )
        filler_ids = torch.tensor([stoi[w] for w in self.filler])
        tokens = filler_ids[torch.randint(len(self.filler), (n, L), generator=g)]
        if self.mention_rate > 0:  # names mentioned in passing: a memory must not keep just any name
            mention = torch.rand(n, L, generator=g) < self.mention_rate
            tokens[mention] = torch.randint(len(self.names), (int(mention.sum()),), generator=g)
        # Each example gets n_facts distinct names and roles; fact 0 is the one asked about.
        names = torch.rand(n, len(self.names), generator=g).argsort(dim=1)[:, : self.n_facts]
        roles = torch.rand(n, len(self.roles), generator=g).argsort(dim=1)[:, : self.n_facts]
        facts = torch.tensor([[stoi.get(w, -1) for w in f.split()] for f, _ in self.roles])  # (roles, F)
        questions = torch.tensor([self.encode(q) for _, q in self.roles])  # (roles, Q)
        rows = torch.arange(n)[:, None]
        tokens[:, L - Q :] = questions[roles[:, 0]]
        starts = torch.empty(n, self.n_facts, dtype=torch.long)
        starts[:, 0] = L - dist - self.name_offset
        for i in range(n if self.n_facts > 1 else 0):  # distractors: places that overlap nothing
            gap = int(dist[i]) - self.min_distance
            starts[i, 1:] = self._distractor_starts(int(starts[i, 0]), gap, g)
        for j in range(self.n_facts):
            fact = facts[roles[:, j]]
            fact[:, self.name_offset] = names[:, j]
            tokens[rows, starts[:, j : j + 1] + torch.arange(F)] = fact
        return RecallBatch(tokens, names[:, 0].clone(), dist)

    def _distractor_starts(self, queried: int, gap: int, g: torch.Generator) -> torch.Tensor:
        """Starts of the ``n_facts - 1`` distractor facts, around the queried fact at ``queried``.

        Each distractor lands in the gap (between the queried fact and the question) or
        before the queried fact, in proportion to the room there; the gap takes only as
        many as fit, and the room before always holds them all (``seq_len`` keeps a place
        for every fact). Within a region, m facts among r filler tokens start after
        k_1 <= ... <= k_m filler tokens, drawn at random.
        """
        F, m = self.fact_length, self.n_facts - 1
        after = 0
        for _ in range(m):
            if gap - after * F >= F and float(torch.rand(1, generator=g)) < gap / (gap + queried):
                after += 1
        starts: list[int] = []
        for lo, length, count in ((0, queried, m - after), (queried + F, gap, after)):
            if count:
                k = torch.randint(length - count * F + 1, (count,), generator=g).sort().values
                starts += [lo + int(k[j]) + j * F for j in range(count)]
        return torch.tensor(starts, dtype=torch.long)

    # ------------------------------------------------------------------ scoring

    def accuracy(self, logits: torch.Tensor, answers: torch.Tensor) -> float:
        """Share of examples whose highest-scoring *name* is the answer.

        ``logits`` (n, vocab_size) are the model's scores for the token after the question.
        Only the names compete, so a model that has not found the fact scores about
        ``chance``, whatever it thinks of the other words.
        """
        if logits.dim() != 2 or logits.shape[-1] != self.vocab_size:
            raise ValueError(
                f"logits must have shape (n, vocab_size={self.vocab_size}), got {tuple(logits.shape)}; "
                f"pass the scores for the position right after the question"
            )
        if answers.shape != logits.shape[:1]:
            raise ValueError(f"answers must have shape ({logits.shape[0]},), got {tuple(answers.shape)}")
        guess = logits[:, : len(self.names)].argmax(dim=-1)
        return (guess.cpu() == answers.cpu()).float().mean().item()




# =========================================================================== instruction tasks
#
# Chapter 10 teaches a model to follow instructions. On free-form instructions ("Name a
# mammal that lays eggs.") a small model learns the *form* of an answer but not the
# facts, so the chapter also needs instructions whose answers are computed from the
# input, which we can check exactly and which a small model can master.
#
# Two choices make the data honest for a small model:
# * The words are made up (random lowercase letters). A model cannot answer "reverse
#   the word" about a word it has never seen by recalling a training answer, only by
#   reading the input; and no test word occurs in training.
# * All phrasings of one task have the same number of characters, so the input sits at
#   the same place in every prompt of that task. Our small CPU model has no mechanism
#   for finding text by what precedes it (no induction heads, chapter 11) and reads the
#   input by its position; chapter 10 measures what happens when the position moves.


@dataclass(frozen=True)
class InstructionTask:
    """One kind of instruction whose answer is computed from its input.

    ``phrasings`` are different ways to ask for the same thing, all of the same length
    (see the comment above); ``example`` is an input.
    """

    name: str
    description: str
    phrasings: tuple[str, ...]
    example: str

    def __post_init__(self) -> None:
        if len(self.phrasings) < 2 or len(set(self.phrasings)) != len(self.phrasings):
            raise ValueError(f"task {self.name!r} needs at least two distinct phrasings")
        if len({len(p) for p in self.phrasings}) != 1:
            raise ValueError(f"the phrasings of task {self.name!r} must all have the same length, "
                             f"got {sorted({len(p) for p in self.phrasings})} characters")


INSTRUCTION_TASKS: dict[str, InstructionTask] = {t.name: t for t in (
    InstructionTask("reverse", "a made-up word of 3-5 letters, reversed", (
        "Reverse the letters.", "Write it in reverse.", "Spell it in reverse.",
        "Spell the word back."), "pelk"),
    InstructionTask("upper", "a made-up word of 3-5 letters in capitals", (
        "Put it in uppercase.", "Use capital letters.", "Turn it to capitals.",
        "Write in upper case."), "pelk"),
    InstructionTask("length", "the number of letters of a made-up word of 3-8 letters", (
        "Count the letters.", "Count its letters.", "Count each letter.",
        "Give letter count."), "ravomes"),
    InstructionTask("add", "the sum of two numbers from 0 to 9", (
        "Add the two numbers.", "What do they add to?", "Sum the two numbers.",
        "What is their total?"), "4 and 7"),
    InstructionTask("in_words", "a number from 0 to 99 in words", (
        "Write it out in words.", "Give it in full words.", "Spell out this number.",
        "Write in words please."), "42"),
)}
"""The computable instruction tasks, by name (see ``instruction_tasks``)."""

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_in_words(n: int) -> str:
    """0-99 in English words, with a hyphen between tens and units: 42 -> 'forty-two'."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 99:
        raise ValueError(f"number_in_words covers the integers 0 to 99, got {n!r}")
    if n < 20:
        return _ONES[n]
    tens, units = divmod(n, 10)
    return _TENS[tens] + ("-" + _ONES[units] if units else "")


def solve(task: str, text: str) -> str:
    """The correct answer to ``task`` for the input ``text``."""
    if task == "reverse":
        return text[::-1]
    if task == "upper":
        return text.upper()
    if task == "length":
        return str(len(text))
    if task == "add":
        a, b = text.split(" and ")
        return str(int(a) + int(b))
    if task == "in_words":
        return number_in_words(int(text))
    raise ValueError(f"unknown task {task!r}; the tasks are {sorted(INSTRUCTION_TASKS)}")


def task_record(task: str, instruction: str, text: str) -> dict[str, str]:
    """One record in the Alpaca layout (``instruction``, ``input``, ``output``) plus its ``task``."""
    return {"instruction": instruction, "input": text, "output": solve(task, text), "task": task}


class TaskSplit(NamedTuple):
    """Records of the computable tasks, split four ways.

    ``train`` and ``val`` ask in the seen phrasings about training inputs; ``test`` asks
    in the seen phrasings about held-out inputs; ``test_unseen`` asks about held-out
    inputs in phrasings that appear nowhere in training. ``unseen`` names those
    phrasings, per task.
    """

    train: list[dict[str, str]]
    val: list[dict[str, str]]
    test: list[dict[str, str]]
    test_unseen: list[dict[str, str]]
    unseen: dict[str, tuple[str, ...]]


class _Inputs:
    """Draws task inputs; ``hold_out()`` switches to inputs that training never used.

    Numbers (0-99) and pairs of digits are split once, by the seed, into a training
    part and a held-out part. Made-up words are drawn fresh; every word drawn for
    training is remembered, and after ``hold_out()`` such a word is drawn again.
    """

    def __init__(self, rng: random.Random, held_out: float) -> None:
        self.rng, self.testing = rng, False
        self.used: set[str] = set()
        numbers, pairs = list(range(100)), [(a, b) for a in range(10) for b in range(10)]
        rng.shuffle(numbers)
        rng.shuffle(pairs)
        k, m = round(held_out * len(numbers)), round(held_out * len(pairs))
        self.numbers = {False: numbers[k:], True: numbers[:k]}
        self.pairs = {False: pairs[m:], True: pairs[:m]}

    def hold_out(self) -> None:
        self.testing = True

    def word(self, lo: int, hi: int) -> str:
        while True:
            w = "".join(self.rng.choice(string.ascii_lowercase) for _ in range(self.rng.randint(lo, hi)))
            if not self.testing:
                self.used.add(w)
                return w
            if w not in self.used:
                return w

    def draw(self, task: str) -> str:
        rng = self.rng
        if task == "reverse":
            return self.word(3, 5)
        if task == "length":
            return self.word(3, 8)
        if task == "upper":
            return self.word(3, 5)
        if task == "add":
            a, b = rng.choice(self.pairs[self.testing])
            return f"{a} and {b}"
        if task == "in_words":
            return str(rng.choice(self.numbers[self.testing]))
        raise ValueError(f"unknown task {task!r}; the tasks are {sorted(INSTRUCTION_TASKS)}")


def instruction_tasks(n_train: int = 400, n_val: int = 10, n_test: int = 20, *, seed: int = 0,
                      tasks: Sequence[str] | None = None, unseen_phrasings: int = 1,
                      held_out: float = 0.25,
                      phrasings: Mapping[str, Sequence[str]] | None = None) -> TaskSplit:
    """Instruction records with computable answers, in the Alpaca record format.

    Per task: ``n_train`` training and ``n_val`` validation records (training inputs,
    seen phrasings), ``n_test`` test records (held-out inputs, seen phrasings) and, when
    ``unseen_phrasings`` > 0, ``n_test`` records that ask about held-out inputs in
    unseen phrasings. For each task a seeded choice of ``unseen_phrasings`` of its
    phrasings is kept out of training and validation. Held-out inputs: a seeded
    ``held_out`` share of the numbers 0-99 and of the pairs of digits is kept for
    testing, and no made-up word of the test records occurs in a training or
    validation record. Records carry a fourth key, ``task``, which ``format_prompt``
    and ``InstructionDataset`` ignore. ``phrasings`` asks some tasks in other wordings
    than their own (chapter 11 asks the counting task in everyday wordings of different
    lengths); the records' inputs and answers stay the same. The result depends only on
    the arguments.
    """
    names = list(INSTRUCTION_TASKS) if tasks is None else list(tasks)
    unknown = sorted(set(names) - set(INSTRUCTION_TASKS))
    if unknown or not names:
        raise ValueError(f"unknown tasks {unknown or names}; choose from {sorted(INSTRUCTION_TASKS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"each task may be named once, got {names}")
    for label, n, least in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0)):
        if isinstance(n, bool) or not isinstance(n, int) or n < least:
            raise ValueError(f"{label} must be an integer of at least {least}, got {n!r}")
    wordings = {t: tuple(INSTRUCTION_TASKS[t].phrasings) for t in names}
    for task, given in (phrasings or {}).items():
        if task not in wordings:
            raise ValueError(f"phrasings given for {task!r}, which is not among the tasks {names}")
        own = (given,) if isinstance(given, str) else tuple(given)
        if len(own) < 2 or len(set(own)) != len(own) or not all(isinstance(p, str) and p.strip() for p in own):
            raise ValueError(f"the phrasings of {task!r} must be a list of at least two distinct, "
                             f"non-empty strings, got {given!r}")
        wordings[task] = own
    fewest = min(len(w) for w in wordings.values())
    if isinstance(unseen_phrasings, bool) or not isinstance(unseen_phrasings, int) \
            or not 0 <= unseen_phrasings < fewest:
        raise ValueError(f"unseen_phrasings must be an integer from 0 to {fewest - 1} (each task "
                         f"keeps at least one phrasing to train on), got {unseen_phrasings!r}")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out is the share of inputs kept for testing, in (0, 1); got {held_out!r}")
    rng = random.Random(seed)
    inputs = _Inputs(rng, held_out)
    seen: dict[str, list[str]] = {}
    unseen: dict[str, tuple[str, ...]] = {}
    for task in names:
        order = list(wordings[task])
        rng.shuffle(order)
        unseen[task], seen[task] = tuple(order[:unseen_phrasings]), order[unseen_phrasings:]

    def records(n: int, wordings: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
        out = [task_record(task, rng.choice(wordings[task]), inputs.draw(task))
               for task in names if wordings[task] for _ in range(n)]
        rng.shuffle(out)
        return out

    train, val = records(n_train, seen), records(n_val, seen)
    inputs.hold_out()
    test, test_unseen = records(n_test, seen), records(n_test, unseen)
    return TaskSplit(train, val, test, test_unseen, unseen)


def accuracy_by_task(records: Sequence[Mapping[str, str]], answers: Sequence[str]) -> dict[str, float]:
    """Share of exactly right answers per task, and over all records under ``"all"``.

    Exact means equal to the reference after stripping surrounding whitespace: case and
    punctuation count ("PELK" is not "pelk"), unlike ``llmbook.metrics.exact_match``,
    which normalises both for free-text answers.
    """
    if len(records) != len(answers):
        raise ValueError(f"{len(records)} records but {len(answers)} answers; they must pair up")
    if not records:
        raise ValueError("nothing to score: no records were given")
    hits: dict[str, list[bool]] = {}
    for record, answer in zip(records, answers, strict=True):
        hits.setdefault(record.get("task", "?"), []).append(answer.strip() == record["output"])
    out = {task: sum(h) / len(h) for task, h in hits.items()}
    out["all"] = sum(sum(h) for h in hits.values()) / len(records)
    return out


__all__ = ["FILLER", "INSTRUCTION_TASKS", "NAMES", "ROLES", "InstructionTask", "RecallBatch", "RecallTask",
           "TaskSplit", "accuracy_by_task", "instruction_tasks", "number_in_words", "solve", "task_record"]
