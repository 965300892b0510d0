"""Synthetic tasks with a known answer, for measuring what a model can use from its context
(chapter 4 introduces them; chapter 11 uses them again for in-context learning).

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


__all__ = ["FILLER", "NAMES", "ROLES", "RecallBatch", "RecallTask"]
