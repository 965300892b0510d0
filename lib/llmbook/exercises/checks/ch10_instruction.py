"""Checks for chapter 10, "Instruction fine-tuning and LoRA".

Five exercises build what the chapter explains but does not print: the training batch
of a conversation with several turns (only the assistant's turns count in the loss,
padding never does), token F1 with its normalisation (the SQuAD score the chapter grades
answers with), the per-task exact-match scorer of the computable instruction tasks,
merging a LoRA update into its frozen weight, and an experiment: a LoRA rank, alpha and
learning rate with which a LoRA adapter, trained here in the check, recovers a hidden
low-rank change of a weight matrix within 100 steps and a parameter budget. Each check
tries ordinary and edge cases and, when the answer is wrong, names the input, shows
expected against got, and recognises the usual mistakes (an off-by-one in the mask,
padding that counts, a set where a multiset is needed, a scale of alpha instead of
alpha / r) by computing them and comparing.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from llmbook.exercises.compare import close, is_int, known_mistake, number, same, scalar, tensor_answer, tensor_tuple
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register
from llmbook.metrics import token_f1 as reference_token_f1
from llmbook.model import IGNORE_INDEX
from llmbook.tasks import accuracy_by_task

CHAPTER = "10"


# --------------------------------------------------------------------------- a conversation's training batch

Segment = tuple[list[int], bool]


def reference_chat_batch(chats: Sequence[Sequence[Segment]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of conversations: targets count only inside segments marked True."""
    rows = []
    for chat in chats:
        ids = [t for tokens, _ in chat for t in tokens]
        learn = [flag for tokens, flag in chat for _ in tokens]
        x = ids[:-1]
        y = [ids[t + 1] if learn[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)]
        rows.append((x, y))
    width = max(len(x) for x, _ in rows)
    X = torch.full((len(rows), width), pad_id, dtype=torch.long)
    Y = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        X[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        Y[i, : len(y)] = torch.tensor(y, dtype=torch.long)
    return X, Y


def _chat_variants(chats: Sequence[Sequence[Segment]], pad_id: int) -> list[tuple[Any, str]]:
    X, Y = reference_chat_batch(chats, pad_id)
    lengths = [sum(len(tokens) for tokens, _ in chat) - 1 for chat in chats]
    padding = torch.arange(X.shape[1])[None, :] >= torch.tensor(lengths)[:, None]

    def unshifted_mask() -> tuple[torch.Tensor, torch.Tensor]:
        # the mask taken from the input position t instead of the target position t + 1
        Y2 = torch.full_like(Y, IGNORE_INDEX)
        for i, chat in enumerate(chats):
            ids = [t for tokens, _ in chat for t in tokens]
            learn = [flag for tokens, flag in chat for _ in tokens]
            for t in range(len(ids) - 1):
                if learn[t]:
                    Y2[i, t] = ids[t + 1]
        return X, Y2

    def first_turn_only() -> tuple[torch.Tensor, torch.Tensor]:
        # only the first segment masked, as for a single prompt and response
        Y2 = Y.clone()
        for i, chat in enumerate(chats):
            ids = [t for tokens, _ in chat for t in tokens]
            first = len(chat[0][0])
            for t in range(len(ids) - 1):
                Y2[i, t] = IGNORE_INDEX if t + 1 < first or padding[i, t] else ids[t + 1]
        return X, Y2

    def nothing_masked() -> tuple[torch.Tensor, torch.Tensor]:
        Y2 = Y.clone()
        for i, chat in enumerate(chats):
            ids = [t for tokens, _ in chat for t in tokens]
            Y2[i, : len(ids) - 1] = torch.tensor(ids[1:])
        return X, Y2

    padded_targets = Y.clone()
    padded_targets[padding] = pad_id
    x_with_ignore = X.clone()
    x_with_ignore[padding] = IGNORE_INDEX
    zeros = Y.clone()
    zeros[(Y == IGNORE_INDEX) & ~padding] = 0
    return [
        (
            unshifted_mask,
            (
                "off by one: y[t] is the token at t + 1, so whether it counts depends on the segment of "
                "token t + 1, not of token t. (With the mask taken at t, the first answer token is "
                "not learned and the token after each answer, the user's first, is.)"
            ),
        ),
        (
            first_turn_only,
            (
                "only the first segment was masked. In a conversation every segment marked False (every "
                "user turn, not only the first) is context: its tokens are never targets."
            ),
        ),
        (nothing_masked, "nothing is masked: a target counts only when its token is in a segment marked True."),
        (
            (X, padded_targets),
            ("the padding targets hold pad_id, so the model would be trained to predict padding; pad Y with -100."),
        ),
        ((x_with_ignore, Y), "X is padded with pad_id (a real token id); only Y is padded with -100."),
        ((X, zeros), "masked targets are -100 (IGNORE_INDEX), not 0: 0 is a real token id."),
    ]


CHAT_CASES: list[tuple[list[list[Segment]], int, str]] = [
    ([[([10, 11, 12], False), ([20, 21, 1], True)]], 1, "one prompt and its answer"),
    (
        [
            [([10, 11], False), ([20, 21, 1], True), ([12, 13, 14], False), ([22, 1], True)],
            [([15], False), ([23, 24, 25, 1], True)],
        ],
        1,
        "two turns, and a one-token prompt",
    ),
    (
        [
            [([30, 31, 32, 33], False), ([40, 1], True)],
            [([34, 35], False), ([41, 42, 43, 44, 45, 1], True)],
            [([36, 37, 38], False), ([46], True), ([39], False), ([47, 48, 1], True)],
        ],
        0,
        "three chats, pad_id 0",
    ),
    ([[([50, 51], True), ([52, 53], False), ([54, 1], True)]], 1, "a chat that opens with a learned turn"),
]


def _describe_chats(chats: Sequence[Sequence[Segment]]) -> str:
    return "[" + ", ".join("[" + ", ".join(f"({list(t)}, {f})" for t, f in chat) + "]" for chat in chats) + "]"


@register("instruction.chat_batch", chapter=CHAPTER, title="A conversation's training batch", kind="build")
def check_chat_batch(fn: Any) -> str:
    """One and several conversations, one and two turns, pad ids 1 and 0, a learned opening."""
    for chats, pad_id, what in CHAT_CASES:
        label = f"chat_batch({_describe_chats(chats)}, pad_id={pad_id}) ({what})"
        given = [[(list(t), f) for t, f in chat] for chat in chats]
        X_ref, Y_ref = reference_chat_batch(chats, pad_id)
        out = tensor_tuple(
            call(fn, given, pad_id, label=label),
            label,
            ("X", "Y"),
            expected=(X_ref, Y_ref),
            hint="build each with torch.full(...) or torch.tensor(..., dtype=torch.long).",
        )
        X, Y = out
        for name, t in (("X", X), ("Y", Y)):
            if t.dtype != torch.long:
                raise CheckFailed(
                    f"{label}: {name} has dtype {t.dtype}; token ids and targets must be "
                    f"torch.long.\nHint: torch.full(..., dtype=torch.long)."
                )
        if X.shape != X_ref.shape or Y.shape != Y_ref.shape:
            hint = (
                "each chat gives len(ids) - 1 inputs and targets (x = ids[:-1], y = ids[1:]); pad every "
                "row to the longest of them."
            )
            if X.shape[1] == X_ref.shape[1] + 1:
                hint = "x = ids[:-1] and y = ids[1:]: a chat of n tokens gives n - 1 positions, not n."
            raise CheckFailed(
                f"{label}: X has shape {tuple(X.shape)} and Y {tuple(Y.shape)}, expected "
                f"{tuple(X_ref.shape)} for both.\nHint: {hint}"
            )
        if not (torch.equal(X, X_ref) and torch.equal(Y, Y_ref)):
            hint = known_mistake((X, Y), _chat_variants(chats, pad_id)) or (
                "X[i] is the chat's tokens without the last, then pad_id; Y[i, t] is token t + 1 when "
                "that token is in a segment marked True, else -100, and -100 on the padding."
            )
            raise CheckFailed(
                f"{label} is wrong.\n  expected: X = {X_ref.tolist()}\n            Y = {Y_ref.tolist()}\n"
                f"  got:      X = {X.tolist()}\n            Y = {Y.tolist()}\nHint: {hint}"
            )
    return (
        "Correct: inputs are each chat without its last token, right-padded with pad_id; a target "
        "counts only where its token is in a learned turn, so every user turn and the padding are "
        "-100."
    )


# --------------------------------------------------------------------------- token F1


def _words(text: str) -> list[str]:
    return "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith("P")).split()


def _f1(overlap: float, n_pred: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def _f1_variants(pred: str, ref: str) -> list[tuple[Any, str]]:
    p, r = _words(pred), _words(ref)
    raw_p, raw_r = pred.split(), ref.split()
    out: list[tuple[Any, str]] = []
    if p and r:
        shared = sum((Counter(p) & Counter(r)).values())
        as_sets = len(set(p) & set(r))
        out += [
            (
                _f1(as_sets, len(p), len(r)),
                (
                    "you counted shared *distinct* words (sets). A word that occurs twice in both counts "
                    "twice: take the multiset overlap, sum((Counter(p) & Counter(r)).values())."
                ),
            ),
            (
                _f1(as_sets, len(set(p)), len(set(r))),
                (
                    "you compared sets of words; token F1 counts repeated words: use Counter and its & "
                    "(the smaller count of each word)."
                ),
            ),
            (shared / len(r), "you returned the recall (overlap / reference length); F1 is 2PR / (P + R)."),
            (shared / len(p), "you returned the precision (overlap / prediction length); F1 is 2PR / (P + R)."),
            (
                (shared / len(p) + shared / len(r)) / 2,
                "you averaged P and R; F1 is their harmonic mean, 2PR / (P + R).",
            ),
        ]
    if raw_p and raw_r:
        out.append(
            (
                _f1(sum((Counter(raw_p) & Counter(raw_r)).values()), len(raw_p), len(raw_r)),
                (
                    "you compared the raw words. Normalise both texts first: lower case, and remove every "
                    "punctuation character (unicodedata.category(ch) starts with 'P'), then split on whitespace."
                ),
            )
        )
        lower_p, lower_r = pred.lower().split(), ref.lower().split()
        out.append(
            (
                _f1(sum((Counter(lower_p) & Counter(lower_r)).values()), len(lower_p), len(lower_r)),
                (
                    "you lower-cased but kept the punctuation: 'Paris.' and 'paris' must be the same word. Remove "
                    "every character whose unicodedata.category starts with 'P'."
                ),
            )
        )
    return out


F1_CASES: list[tuple[str, str]] = [
    ("The cat.", "the cat"),
    ("Paris.", "paris"),
    ("the cat and the dog", "the dog and the cat."),
    ("The cat sat on the mat.", "the cat lay on the mat"),
    ("the the the", "the cat"),
    ("New York, New York!", "new york"),
    ("«Café» au lait — s'il vous plaît", "café au lait sil vous plait"),
    ("a b c", "x y z"),
    ("", "something"),
    ("...", "!!"),
]


@register("instruction.token_f1", chapter=CHAPTER, title="Token F1, normalisation included", kind="build")
def check_token_f1(fn: Any) -> str:
    """Punctuation and case, repeated words, reordering, non-ASCII punctuation, empty answers."""
    for pred, ref in F1_CASES:
        label = f"token_f1({pred!r}, {ref!r})"
        expected = reference_token_f1(pred, ref)
        got = number(call(fn, pred, ref, label=label), label, expected)
        if not close(float(got), expected):
            hint = None
            if not (_words(pred) and _words(ref)):
                hint = (
                    "when a text has no words after normalising, nothing is shared: return 0.0, "
                    "except when neither has any word, where they agree: return 1.0."
                )
            hint = hint or known_mistake(float(got), _f1_variants(pred, ref))
            hint = hint or (
                "normalise (lower case, no punctuation), split, overlap = sum((Counter(p) & "
                "Counter(r)).values()), P = overlap/len(p), R = overlap/len(r), F1 = 2PR/(P+R)."
            )
            raise CheckFailed(
                f"{label} is wrong.\n  expected: {expected:.6f}\n  got:      {float(got):.6f}\nHint: {hint}"
            )
    return "Correct on every pair: normalised words, repeated words counted as often as both have them."


# --------------------------------------------------------------------------- scoring the computable tasks


def _records(tasks_outputs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"task": t, "instruction": f"Do {t}.", "input": o[::-1], "output": o} for t, o in tasks_outputs]


TASK_CASES: list[tuple[list[dict[str, str]], list[str], str]] = [
    (
        _records([("reverse", "olleh"), ("reverse", "dlrow"), ("upper", "HELLO")]),
        ["olleh", "world", " HELLO\n"],
        "two tasks, spaces around an answer",
    ),
    (
        _records([("upper", "PELK"), ("upper", "ZOR"), ("upper", "MIB"), ("length", "4"), ("reverse", "abc")]),
        ["pelk", "ZOR", "MIB", "4", "abc"],
        "case counts",
    ),
    (_records([("length", "3")] * 3 + [("reverse", "xy")]), ["3", "three", "3.", "xy"], "unequal task sizes"),
]


def _task_variants(records: list[dict[str, str]], answers: list[str]) -> list[tuple[Any, str]]:
    expected = accuracy_by_task(records, answers)
    tasks = [k for k in expected if k != "all"]
    macro = {**expected, "all": sum(expected[t] for t in tasks) / len(tasks)}
    loose_records = [{**r, "output": r["output"].lower()} for r in records]
    loose = accuracy_by_task(loose_records, [a.lower() for a in answers])
    unstripped: dict[str, list[int]] = {}
    for r, a in zip(records, answers, strict=True):
        unstripped.setdefault(r["task"], []).append(int(a == r["output"]))
    raw = {t: sum(h) / len(h) for t, h in unstripped.items()}
    raw["all"] = sum(sum(h) for h in unstripped.values()) / len(records)
    sizes = Counter(r["task"] for r in records)
    counts = {t: float(round(v * sizes[t])) for t, v in expected.items() if t != "all"}
    counts["all"] = float(round(expected["all"] * len(records)))
    return [
        (
            macro,
            (
                "'all' is the share of all records answered right (each record counts once), not the "
                "mean of the tasks' shares: tasks may have different numbers of records."
            ),
        ),
        (
            loose,
            (
                "the comparison must keep case: 'pelk' is not 'PELK' (capitalising is one of the tasks). "
                "Only strip the whitespace around the answer."
            ),
        ),
        (raw, "strip the whitespace around each answer (answer.strip()) before comparing."),
        (counts, "return shares (right / records of that task), not counts."),
    ]


def _same_scores(got: dict, variant: dict) -> bool:
    return set(got) == set(variant) and all(
        isinstance(scalar(got[k]), (int, float)) and close(float(scalar(got[k])), float(v)) for k, v in variant.items()
    )


@register("instruction.task_accuracy", chapter=CHAPTER, title="Scoring the computable tasks", kind="build")
def check_task_accuracy(fn: Any) -> str:
    """Several tasks of unequal sizes, case, whitespace, a near miss ('3.')."""
    for records, answers, what in TASK_CASES:
        label = f"task_accuracy(<{len(records)} records: {[r['task'] for r in records]}>, {answers!r}) ({what})"
        expected = accuracy_by_task(records, answers)
        got = call(fn, [dict(r) for r in records], list(answers), label=label)
        if not isinstance(got, dict):
            raise mismatch(f"{label} should return a dict (task -> share, and 'all').", expected, got)
        if set(got) != set(expected):
            hint = "one key per task that occurs in the records, plus 'all'."
            if "all" not in got:
                hint = "add the key 'all': the share over every record."
            raise mismatch(f"{label} has the wrong keys.", sorted(expected), sorted(got, key=str), hint)
        wrong = [
            k
            for k in expected
            if not (isinstance(scalar(got[k]), (int, float)) and close(float(scalar(got[k])), expected[k]))
        ]
        if wrong:
            hint = next(
                (why for variant, why in _task_variants(records, answers) if _same_scores(got, variant)), None
            ) or (
                "a record is right when answer.strip() == record['output'] exactly; each task's share "
                "is over its own records, and 'all' over every record."
            )
            raise mismatch(f"{label}: wrong value for {wrong[0]!r}.", expected, got, hint)
    return "Correct: exact match after stripping whitespace, case kept, a share per task and over all records."


# --------------------------------------------------------------------------- merging LoRA


def reference_merge(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float) -> torch.Tensor:
    return weight + (alpha / A.shape[0]) * (B @ A)


def _merge_variants(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float) -> list[tuple[Any, str]]:
    r = A.shape[0]
    return [
        (lambda: weight + alpha * (B @ A), "the scale is alpha / r, not alpha (r = A.shape[0])."),
        (lambda: weight + (B @ A), "multiply B @ A by the scale alpha / r."),
        (lambda: weight + (r / alpha) * (B @ A), "the scale is alpha / r, not r / alpha."),
        (lambda: (alpha / r) * (B @ A), "add the update to the frozen weight: W + (alpha / r) * B @ A."),
        (
            lambda: weight + (alpha / r) * (A.T @ B.T),
            (
                "you formed A.T @ B.T, which is (B @ A).T: the update to W (out x in) is B @ A, with B "
                "(out x r) on the left."
            ),
        ),
        (lambda: weight - (alpha / r) * (B @ A), "add the update; do not subtract it."),
    ]


@register("instruction.merge_lora", chapter=CHAPTER, title="Merging LoRA into the weight", kind="build")
def check_merge_lora(fn: Any) -> str:
    """Square and rectangular weights, ranks 1 to 4, alpha equal to and different from r."""
    g = torch.Generator().manual_seed(10)
    for d_out, d_in, r, alpha in [(6, 6, 2, 4.0), (5, 8, 1, 1.0), (7, 3, 3, 3.0), (10, 10, 4, 16.0)]:
        weight = torch.randn(d_out, d_in, generator=g) / d_in**0.5
        A = torch.randn(r, d_in, generator=g) * 0.5
        B = torch.randn(d_out, r, generator=g) * 0.5
        label = f"merge_lora(weight {tuple(weight.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, alpha={alpha})"
        args = (weight.clone(), A.clone(), B.clone(), alpha)
        got = call(
            fn,
            *args,
            label=label,
            hints=[
                ("cannot be multiplied", "B (out x r) times A (r x in): B @ A has the shape of weight."),
                ("must match the size", "B (out x r) times A (r x in): B @ A has the shape of weight."),
            ],
        )
        if not torch.equal(args[0], weight):
            raise CheckFailed(
                f"{label} changed `weight` in place (weight += ...). Return a new tensor: "
                f"the caller may still need the frozen weight (to unmerge, or to train "
                f"another adapter)."
            )
        expected = reference_merge(weight, A, B, alpha)
        got = tensor_answer(
            got,
            label,
            shape=expected.shape,
            expected=expected,
            hint="the merged weight has the shape of weight, (out, in): B @ A, not A @ B.",
        )
        if not same(got, expected):
            hint = known_mistake(got, _merge_variants(weight, A, B, alpha)) or (
                "W' = W + (alpha / r) * B @ A with r = A.shape[0]."
            )
            raise mismatch(f"{label} is wrong (first rows shown).", expected[:2], got[:2], hint)
    return (
        "Correct: W + (alpha / r) · B A, a new tensor of W's shape; a plain linear layer with it "
        "computes exactly what the LoRA layer computed."
    )


# --------------------------------------------------------------------------- experiment: rank and learning rate

LORA_DIM, LORA_STEPS, LORA_BATCH, LORA_TARGET = 64, 100, 64, 0.01
LORA_SEEDS = (0, 1, 2)
HIDDEN_SINGULAR_VALUES = (1.0, 0.8, 0.6, 0.45)
MAX_RANK = LORA_DIM * LORA_DIM // 4 // (2 * LORA_DIM)  # LoRA's A and B hold at most a quarter of W's parameters


def lora_task() -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen weight W0 (64 x 64) and the hidden change ΔW that fine-tuning should learn."""
    g = torch.Generator().manual_seed(123)
    w0 = torch.randn(LORA_DIM, LORA_DIM, generator=g) / LORA_DIM**0.5
    k = len(HIDDEN_SINGULAR_VALUES)
    u, _ = torch.linalg.qr(torch.randn(LORA_DIM, k, generator=g))
    v, _ = torch.linalg.qr(torch.randn(LORA_DIM, k, generator=g))
    return w0, u @ torch.diag(torch.tensor(HIDDEN_SINGULAR_VALUES)) @ v.T


def train_lora(settings: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Train a LoRA adapter on the frozen 64 x 64 weight W0 to imitate W0 + ΔW.

    ``settings`` is {"r": rank, "alpha": alpha, "lr": learning rate}. A starts random
    (std 1/sqrt(64)), B at zero, as in the chapter; 100 steps of Adam on the mean squared
    error of the outputs for 64 random inputs each. Returns {"error": the share of ΔW's
    effect still missing on 1,024 new inputs (1 at the start, 0 when learned), "curve": that
    share every 20 steps, "parameters": r * (64 + 64)}.
    """
    w0, delta = lora_task()
    r, alpha, lr = int(settings["r"]), float(settings["alpha"]), float(settings["lr"])
    g = torch.Generator().manual_seed(seed)
    A = (torch.randn(r, LORA_DIM, generator=g) / LORA_DIM**0.5).requires_grad_()
    B = torch.zeros(LORA_DIM, r, requires_grad=True)
    held_out = torch.randn(1024, LORA_DIM, generator=g)
    optimizer = torch.optim.Adam([A, B], lr=lr)

    def error() -> float:
        with torch.no_grad():
            missing = held_out @ ((alpha / r) * (B @ A) - delta).T
            return float((missing**2).sum() / ((held_out @ delta.T) ** 2).sum())

    curve = []
    for step in range(LORA_STEPS):
        x = torch.randn(LORA_BATCH, LORA_DIM, generator=g)
        out = x @ w0.T + (alpha / r) * (x @ A.T) @ B.T
        loss = ((out - x @ (w0 + delta).T) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 20 == 0:
            curve.append(error())
    return {"error": curve[-1], "curve": curve, "parameters": r * 2 * LORA_DIM}


def best_possible_error(r: int) -> float:
    """The smallest share any rank-r update can leave (Eckart-Young: drop the smallest singular values)."""
    s = torch.tensor(HIDDEN_SINGULAR_VALUES) ** 2
    return float(s[r:].sum() / s.sum())


def _lora_settings(got: Any, label: str) -> dict[str, Any]:
    example = '{"r": 2, "alpha": 4, "lr": 1e-3}'
    if not isinstance(got, dict) or set(got) != {"r", "alpha", "lr"}:
        raise CheckFailed(
            f"{label} should return a dict with exactly the keys 'r', 'alpha' and 'lr', e.g. "
            f"{example}, but returned {describe(got)}."
        )
    r, alpha, lr = got["r"], scalar(got["alpha"]), scalar(got["lr"])
    if not is_int(r) or r < 1:
        raise CheckFailed(f"{label}: 'r' is the rank, a positive int; got {describe(r)}.")
    if r > MAX_RANK:
        raise CheckFailed(
            f"{label}: rank {r} trains r * (64 + 64) = {r * 2 * LORA_DIM:,} parameters, more than the budget "
            f"of a quarter of W's {LORA_DIM * LORA_DIM:,} ({LORA_DIM * LORA_DIM // 4:,}, so r <= {MAX_RANK}).\n"
            f"Hint: LoRA pays off because the change it learns has low rank: find the smallest rank that "
            f"reaches the target."
        )
    for name, value in (("alpha", alpha), ("lr", lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1000 or math.isnan(value):
            raise CheckFailed(f"{label}: '{name}' should be a positive number; got {describe(value)}.")
    return {"r": int(r), "alpha": float(alpha), "lr": float(lr)}


@register(
    "instruction.choose_lora",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="Experiment: a LoRA rank and learning rate that reach the target",
)
def check_choose_lora(fn: Any) -> str:
    """Trains a LoRA adapter with the learner's settings on seeds 0-2; each must leave under 1 %."""
    label = "choose_lora()"
    settings = _lora_settings(call(fn, label=label), label)
    results = [train_lora(settings, seed) for seed in LORA_SEEDS]
    worst = max(range(len(results)), key=lambda i: results[i]["error"])
    res = results[worst]
    if res["error"] <= LORA_TARGET:
        errors = ", ".join(f"{x['error']:.2%}" for x in results)
        return (
            f"Reached the target: {errors} of the change left on seeds 0, 1, 2 (at most {LORA_TARGET:.0%}) "
            f"after {LORA_STEPS} steps, training {res['parameters']:,} parameters instead of W's "
            f"{LORA_DIM * LORA_DIM:,}."
        )
    floor = best_possible_error(settings["r"])
    curve = res["curve"]
    if floor > LORA_TARGET:
        hint = (
            f"no rank-{settings['r']} update can leave less than {floor:.1%} of this change: the change "
            f"has a higher rank. Raise r (the budget allows up to {MAX_RANK})."
        )
    elif any(math.isnan(e) for e in curve) or max(curve) > 1:
        hint = (
            "the error went above 100 % (worse than not training at all) before it came down: the "
            "learning rate is too large. Lower lr, by factors of 3 to 10."
        )
    elif curve[-1] < 0.8 * curve[-2]:
        hint = (
            "the error is still falling at step 100: the learning rate is too small. Raise lr, by "
            "factors of 3 to 10 (Adam moves each weight by about lr per step, whatever the gradient's "
            "size)."
        )
    else:
        hint = "the error has stopped falling above the target: try a learning rate 3x smaller."
    shown = ", ".join(f"{e:.1%}" for e in curve)
    raise CheckFailed(
        f"With {settings}, {res['error']:.2%} of the change is still missing after {LORA_STEPS} steps on seed "
        f"{LORA_SEEDS[worst]} (every 20 steps: {shown}); the target is at most {LORA_TARGET:.0%} on each of "
        f"seeds 0, 1, 2.\nHint: {hint}"
    )
