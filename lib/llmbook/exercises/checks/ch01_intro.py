"""Checks for chapter 1, "What is a large language model?".

Four small functions carry the chapter's ideas: a character tokenizer (text becomes
token ids and back), softmax with temperature (scores become a next-token probability
distribution), counting a GPT's parameters from its shape (why GPT-2 small is 124M),
and perplexity (what a loss in nats means as "choosing among N tokens"). Each check
compares the learner's function with a reference on ordinary and edge-case inputs and,
when they differ, names the input, the expected and actual results, and the mistake
that most often produces that difference.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Any

import torch

from llmbook.config import GPTConfig
from llmbook.config import count_parameters as reference_count
from llmbook.exercises.compare import (
    close,
    first_row,
    is_int,
    known_mistake,
    number,
    same,
    tensor_answer,
    unchanged,
    whole_number,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register
from llmbook.tokenizers import CharTokenizer

CHAPTER = "01"
ATOL = 1e-6  # probabilities are compared more tightly than the default, near zero especially

# The opening of Tiny Shakespeare: the check falls back to it when the full corpus is
# not on this machine, so that the check never waits on a download.
_SHAKESPEARE_OPENING = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
)


@lru_cache(maxsize=1)
def _real_text() -> str:
    """Tiny Shakespeare if it is available locally, else its opening lines."""
    from llmbook import data

    try:
        data.data_path("text/tinyshakespeare/input.txt", download=False)
        return data.load_corpus("shakespeare")
    except Exception:  # no local copy: a check must not download
        return _SHAKESPEARE_OPENING


# --------------------------------------------------------------------------- tokenizer


def _vocab(build_vocab: Any, text: str) -> tuple[dict, dict]:
    label = f"build_vocab({text[:30]!r}{'...' if len(text) > 30 else ''})"
    result = call(build_vocab, text, label=label)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise CheckFailed(
            f"{label} should return a pair (stoi, itos), but returned {describe(result)}.\n"
            f"Hint: end the function with `return stoi, itos`."
        )
    stoi, itos = result
    if not isinstance(stoi, dict) or not isinstance(itos, dict):
        raise CheckFailed(
            f"{label} should return two dicts, stoi (character → id) and itos (id → character); "
            f"got {type(stoi).__name__} and {type(itos).__name__}."
        )
    if stoi and all(isinstance(k, int) for k in stoi) and all(isinstance(k, str) for k in itos):
        raise CheckFailed(
            f"{label} seems to return (itos, stoi): the first dict has ids as keys. "
            f"Return stoi (character → id) first, then itos (id → character)."
        )
    expected = {c: i for i, c in enumerate(sorted(set(text)))}
    if stoi != expected:
        first_seen = {c: i for i, c in enumerate(dict.fromkeys(text))}
        if len(stoi) == len(text) and len(set(text)) < len(text):
            hint = "every distinct character gets one id, however often it occurs: use set(text)."
        elif stoi == first_seen:
            hint = (
                "your ids follow the order in which characters first appear. Number them in "
                "sorted order, sorted(set(text)), so the vocabulary does not depend on where "
                "a character happens to appear first."
            )
        elif set(stoi) == set(expected):
            hint = "ids should be 0, 1, 2, ... in the order of sorted(set(text))."
        else:
            hint = "the keys of stoi should be exactly the distinct characters of the text."
        raise mismatch(f"{label}: stoi is not what was expected.", expected, stoi, hint)
    inverse = {i: c for c, i in stoi.items()}
    if itos != inverse:
        raise mismatch(
            f"{label}: itos should undo stoi (itos[stoi[c]] == c for every character).",
            inverse,
            itos,
            "build it from stoi: {i: c for c, i in stoi.items()}.",
        )
    return stoi, itos


def _encode(encode: Any, text: str, stoi: dict, expected: list[int]) -> list[int]:
    label = f"encode({text[:30]!r}{'...' if len(text) > 30 else ''}, stoi)"
    ids = call(encode, text, stoi, label=label)
    if isinstance(ids, torch.Tensor) or not isinstance(ids, list):
        raise CheckFailed(
            f"{label} should return a list of ints, but returned {describe(ids)}.\n"
            f"Hint: [stoi[c] for c in text] is a list."
        )
    if ids != expected:
        hint = "look up every character of the text in the stoi you were given, in order."
        if len(ids) != len(expected):
            hint = f"the text has {len(text)} characters, so expect {len(text)} ids."
        at = next((i for i, (a, b) in enumerate(zip(expected, ids, strict=False)) if a != b), 0)
        start = max(at - 5, 0)
        raise mismatch(
            f"{label} gave the wrong ids (first difference at position {at}; showing ids {start} to {start + 19}).",
            expected[start : start + 20],
            ids[start : start + 20],
            hint,
        )
    return ids


def _decode(decode: Any, ids: list[int], itos: dict, expected: str) -> None:
    label = f"decode({ids[:8]}{'...' if len(ids) > 8 else ''}, itos)"
    text = call(decode, ids, itos, label=label)
    if not isinstance(text, str):
        hint = "join the characters into one string with ''.join(...)."
        raise mismatch(f"{label} should return a str.", expected[:40], text, hint)
    if text != expected:
        raise mismatch(
            f"{label} did not give back the original text.",
            expected[:60],
            text[:60],
            "look up every id in itos and join the characters with ''.join(...).",
        )


@register(
    "intro.char_tokenizer",
    chapter=CHAPTER,
    kind="build",
    title="A character tokenizer: build_vocab, encode, decode",
)
def check_char_tokenizer(answer: Any) -> str:
    """Round-trips real text and edge cases and compares the ids with ``CharTokenizer``."""
    if not (isinstance(answer, (tuple, list)) and len(answer) == 3):
        raise CheckFailed(
            f"Pass the three functions together, in this order: "
            f"check('intro.char_tokenizer', (build_vocab, encode, decode)). "
            f"Got {describe(answer)}."
        )
    build_vocab, encode, decode = answer
    cases = ["hello", "abc", "aaaa", "", "naïve café, 🙂!"]
    for text in cases:
        stoi, itos = _vocab(build_vocab, text)
        ids = _encode(encode, text, stoi, [stoi[c] for c in text])
        _decode(decode, ids, itos, text)
    # The vocabulary must come from the argument, not a global left over from experiments.
    stoi_abc, itos_abc = _vocab(build_vocab, "abc")
    _encode(encode, "cab", stoi_abc, [2, 0, 1])
    _decode(decode, [1, 1, 0], itos_abc, "bba")

    corpus = _real_text()
    reference = CharTokenizer.from_text(corpus)
    stoi, itos = _vocab(build_vocab, corpus)
    ids = _encode(encode, corpus, stoi, reference.encode(corpus))
    _decode(decode, ids, itos, corpus)
    return (
        f"Round trips work on {len(cases) + 1} small texts (empty, repeated and non-ASCII "
        f"characters included) and on {len(corpus):,} characters of Shakespeare, whose "
        f"vocabulary has {len(stoi)} characters; your ids match llmbook's CharTokenizer."
    )


# --------------------------------------------------------------------------- softmax


def _softmax_ref(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.double() / temperature, dim=-1)


def _softmax_hint(logits: torch.Tensor, temperature: float, got: torch.Tensor) -> str:
    """Name the mistake that turns ``logits`` into ``got``, if it is a common one."""
    x = logits.double()
    got = got.double()
    if not torch.isfinite(got).all():
        return (
            "your result contains nan or inf. Subtract the largest logit of each row before "
            "exponentiating: exp of a big number overflows, and inf / inf is nan."
        )
    p = torch.softmax(x, dim=-1)
    late = "divide the logits by the temperature *before* exponentiating and normalising."
    mistakes = []
    if temperature != 1.0:
        mistakes.append((p, "the temperature made no difference: divide the logits by it."))
    mistakes += [
        (torch.softmax(x * temperature, dim=-1), "you multiplied by the temperature; divide the logits by it instead."),
        (p / temperature, late),
        (p ** (1 / temperature), late),
    ]
    if x.dim() > 1:
        flat = torch.softmax((x / temperature).flatten(), dim=0).reshape(x.shape)
        mistakes += [
            (
                torch.softmax(x / temperature, dim=0),
                "you normalised over the first dimension; use the last one: dim=-1.",
            ),
            (
                flat,
                "you normalised over the whole tensor. Sum over the last dimension only: .sum(dim=-1, keepdim=True).",
            ),
        ]
    hint = known_mistake(got, mistakes, atol=ATOL)
    if hint:
        return hint
    sums = got.sum(dim=-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        return (
            f"the probabilities along the last dimension should sum to 1, but yours sum to "
            f"{sums.flatten()[:4].tolist()}: divide exp(...) by its sum over dim=-1."
        )
    return "compare your formula with softmax(z)_i = exp(z_i / T) / sum_j exp(z_j / T)."


def _run_softmax(fn: Any, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    shape = tuple(logits.shape)
    label = f"softmax_with_temperature(logits of shape {shape}, temperature={temperature})"
    given = logits.clone()
    out = tensor_answer(
        call(fn, given, temperature, label=label),
        label,
        shape=shape,
        hint="use torch operations (torch.exp, .max, .sum) on the tensor you are given.",
        shape_hint="one probability per logit: when you take the max or the sum over dim=-1, "
        "pass keepdim=True so the result still lines up with the logits.",
    )
    unchanged(label, [given], [logits], ["logits"])
    expected = _softmax_ref(logits, temperature)
    if not same(out, expected, atol=ATOL):
        raise mismatch(
            f"{label} gave wrong probabilities (first row shown).",
            first_row(expected),
            first_row(out),
            _softmax_hint(logits, temperature, out),
        )
    return out


@register(
    "intro.softmax_with_temperature",
    chapter=CHAPTER,
    kind="build",
    title="Softmax with temperature over the last dimension",
)
def check_softmax_with_temperature(fn: Any) -> str:
    """Random logits of several shapes and temperatures, then huge logits for stability."""
    gen = torch.Generator().manual_seed(1)
    for shape, temperature in [((5,), 1.0), ((3, 7), 0.5), ((2, 4, 10), 2.0), ((4, 6), 0.8)]:
        logits = 3 * torch.randn(shape, generator=gen)
        _run_softmax(fn, logits, temperature)

    huge = torch.tensor([[1000.0, 999.0, 998.0], [-1000.0, -999.0, -1001.0]])
    label = "softmax_with_temperature(tensor([[1000., 999., 998.], [-1000., -999., -1001.]]), 1.0)"
    out = call(fn, huge.clone(), 1.0, label=label)
    if isinstance(out, torch.Tensor) and out.shape == huge.shape and not torch.isfinite(out).all():
        if torch.isfinite(out[0]).all():
            hint = (
                "the first row is fine but the second is not: subtract the max of *each row* "
                "(logits.max(dim=-1, keepdim=True).values), not the max of the whole tensor."
            )
        else:
            hint = (
                "did you subtract the max? exp(1000) overflows to inf and inf / inf is nan. "
                "Softmax does not change when you subtract the same number from every logit "
                "of a row, so subtract the largest one first."
            )
        raise CheckFailed(f"{label} returned nan or inf: {out}.\nHint: {hint}")
    _run_softmax(fn, huge, 1.0)
    _run_softmax(fn, torch.tensor([10.0, 20.0, 30.0]), 0.01)  # logits / T = 3000

    row = torch.tensor([2.0, 1.0, 0.1])
    peaks = {t: float(_run_softmax(fn, row, t).max()) for t in (0.5, 1.0, 2.0)}
    if not peaks[0.5] > peaks[1.0] > peaks[2.0]:
        raise CheckFailed(f"Lower temperature should sharpen the distribution, got peaks {peaks}.")
    return (
        "Matches torch.softmax(logits / T, dim=-1) for several shapes and temperatures, stays "
        "finite for logits of ±1000, and lower temperature sharpens: the top probability of "
        f"[2.0, 1.0, 0.1] is {peaks[0.5]:.2f} at T=0.5, {peaks[1.0]:.2f} at T=1 and "
        f"{peaks[2.0]:.2f} at T=2."
    )


# --------------------------------------------------------------------------- sampling


def _copy(gen: torch.Generator) -> torch.Generator:
    """A generator in the same state as ``gen``: each call starts from the same draws."""
    return torch.Generator().set_state(gen.get_state())


def _replay(
    next_logits: Any,
    prompt: list[int],
    new_tokens: int,
    temperature: float,
    gen: torch.Generator,
    *,
    pick: str = "sample",
    scale: str = "divide",
    context: str = "all",
) -> list[int]:
    """The reference sampler, and (with other settings) the usual mistakes, replayed."""
    ids = list(prompt)
    for _ in range(new_tokens):
        logits = next_logits(ids if context == "all" else list(prompt))
        z = {"divide": logits / temperature, "multiply": logits * temperature, "ignore": logits}[scale]
        probs = torch.softmax(z.double(), dim=-1).float()
        if pick == "greedy":
            ids.append(int(probs.argmax()))
        else:
            ids.append(int(torch.multinomial(probs, num_samples=1, generator=gen)))
    return ids


def _sample_mistakes(
    next_logits: Any, prompt: list[int], n: int, t: float, gen: torch.Generator
) -> list[tuple[Any, str]]:
    def again(**how: str) -> list[int]:
        return _replay(next_logits, prompt, n, t, _copy(gen), **how)

    reference = again()
    mistakes: list[tuple[Any, str]] = [
        (
            reference[len(prompt) :],
            "you returned only the new tokens; return the prompt followed by them (the whole list of ids).",
        ),
        (
            again(pick="greedy"),
            "you always picked the most likely token (argmax): that is "
            "greedy decoding. Draw it with torch.multinomial(probs, "
            "num_samples=1, generator=generator).",
        ),
        (
            again(context="prompt"),
            "you asked for the next scores of the prompt every time; "
            "call next_logits on the ids so far, new tokens included.",
        ),
    ]
    if t != 1.0:
        mistakes += [
            (again(scale="ignore"), "the temperature made no difference: divide the logits by it before the softmax."),
            (again(scale="multiply"), "you multiplied the logits by the temperature; divide them by it."),
        ]
    return mistakes


def _bigram_logits(text: str, tok: CharTokenizer) -> torch.Tensor:
    """log P(next | previous) of a character bigram model of ``text``, smoothed."""
    ids = torch.tensor(tok.encode(text))
    v = tok.vocab_size
    counts = torch.bincount(ids[:-1] * v + ids[1:], minlength=v * v).reshape(v, v)
    return (counts.float() + 0.01).log()


def _run_sampler(
    fn: Any, next_logits: Any, prompt: list[int], n: int, t: float, gen: torch.Generator, what: str
) -> list[int]:
    label = f"sample_tokens(next_logits, prompt={prompt}, new_tokens={n}, temperature={t}, generator)"
    got = call(
        fn,
        next_logits,
        list(prompt),
        n,
        t,
        _copy(gen),
        label=label,
        hints=[
            (
                "probability tensor contains",
                "torch.multinomial takes probabilities (positive, summing to 1), not logits: softmax first.",
            ),
            (
                "only integer tensors of a single element",
                "turn the drawn token into a Python int with int(...) before appending.",
            ),
        ],
    )
    expected = _replay(next_logits, prompt, n, t, _copy(gen))
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    if not isinstance(got, list) or not all(is_int(i) for i in got):
        raise mismatch(
            f"{label} ({what}) should return a list of ints.",
            expected,
            got,
            "start from ids = list(prompt) and append int(next_id) each step.",
        )
    if got != expected:
        again = call(fn, next_logits, list(prompt), n, t, _copy(gen), label=label)
        if isinstance(again, torch.Tensor):
            again = again.tolist()
        if again != got:
            hint = (
                "two calls with generators in the same state gave different tokens: "
                "pass generator=generator to torch.multinomial, so the draws can be "
                "replayed."
            )
        elif len(got) != len(expected) and len(got) != n:
            hint = f"return the {len(prompt)} prompt ids followed by exactly {n} new ones: {len(expected)} ids."
        else:
            hint = known_mistake(got, _sample_mistakes(next_logits, prompt, n, t, gen)) or (
                "each step: logits = next_logits(ids), probs = softmax(logits / "
                "temperature), next_id = torch.multinomial(probs, num_samples=1, "
                "generator=generator), then append it."
            )
        raise mismatch(
            f"{label} ({what}) gave other tokens than the reference sampler with the same generator.",
            expected,
            got,
            hint,
        )
    return got


@register(
    "intro.sample",
    chapter=CHAPTER,
    kind="build",
    title="The generation loop, sampling with a temperature",
)
def check_sample(fn: Any) -> str:
    """Replays the learner's draws with the same generator on small random next-token
    models, then writes Shakespeare-like text from a character bigram model."""
    gen = torch.Generator().manual_seed(11)
    table = 2 * torch.randn(7, 7, generator=gen)  # next-token scores after each token

    def next_logits(ids: list[int]) -> torch.Tensor:
        """A tiny model: the scores of the next token depend on the last one."""
        return table[ids[-1]].clone()

    for prompt, n, t, seed in [([3], 12, 1.0, 0), ([0, 5], 15, 0.5, 1), ([6, 6, 2], 10, 2.0, 2), ([1], 1, 1.0, 3)]:
        _run_sampler(fn, next_logits, prompt, n, t, torch.Generator().manual_seed(seed), "a 7-token model")

    text = _real_text()
    tok = CharTokenizer.from_text(text)
    bigram = _bigram_logits(text, tok)

    def next_char_logits(ids: list[int]) -> torch.Tensor:
        """A character bigram model of Shakespeare."""
        return bigram[ids[-1]].clone()

    prompt = tok.encode("ROMEO:\n")
    ids = _run_sampler(
        fn, next_char_logits, prompt, 60, 0.8, torch.Generator().manual_seed(7), "a bigram model of Shakespeare"
    )
    return (
        "Your sampler replays the reference's draws exactly on 4 small models (temperatures "
        "0.5 to 2) and on a character bigram model of Shakespeare, which wrote: "
        f"{tok.decode(ids)!r}"
    )


# --------------------------------------------------------------------------- parameters


def _formula(vocab_size: int, n_positions: int, n_embd: int, n_layer: int) -> int:
    """GPT-2's count written out; the check compares it with ``llmbook.config`` too."""
    d = n_embd
    block = 12 * d * d + 13 * d
    return vocab_size * d + n_positions * d + n_layer * block + 2 * d


def _count_mistakes(v: int, t: int, d: int, n: int) -> list[tuple[int, str]]:
    """(error in the count, explanation) for the usual slips, signed as got - expected."""
    mistakes: list[tuple[Any, ...]] = [
        (
            v * d,
            "you counted a separate output head (lm_head, vocab_size × n_embd). GPT-2",
            "ties it to the token embedding: one matrix serves both ends, so it adds nothing.",
        ),
        (-t * d, "you left out the position embeddings (wpe): n_positions × n_embd."),
        (-v * d, "you left out the token embeddings (wte): vocab_size × n_embd."),
        (
            -9 * n * d,
            "you left out the biases of the linear layers: per block 3·n_embd",
            "(query, key, value) + n_embd (attention output) + 4·n_embd (MLP up) + n_embd",
            "(MLP down) = 9·n_embd.",
        ),
        (
            -(4 * n * d + 2 * d),
            "you left out the layer norms: two per block and a final one,",
            "each with a weight and a bias of n_embd.",
        ),
        (-2 * d, "you left out the final layer norm (ln_f): 2·n_embd."),
        (-(2 * n * d + d), "you counted only the weight of each layer norm; each also has a", "bias of n_embd."),
        (-2 * n * d, "each block has two layer norms (before attention and before the MLP)."),
        (
            -n * (6 * d * d + 3 * d),
            "the MLP is four times wider than the model: n_embd →",
            "4·n_embd → n_embd, so 8·n_embd² weights per block.",
        ),
        (
            -n * (2 * d * d + 2 * d),
            "attention has separate query, key and value projections",
            "(3·n_embd² together) plus an output projection (n_embd²).",
        ),
        (-n * (d * d + d), "you left out the attention output projection (c_proj):", "n_embd² + n_embd per block."),
    ]
    if n > 1:
        mistakes.append((-(n - 1) * (12 * d * d + 13 * d), "you counted a single block; there are n_layer of them."))
    return [(delta, " ".join(words)) for delta, *words in mistakes]


def _explain_count(got: int, args: tuple[int, int, int, int]) -> str:
    v, t, d, n = args
    expected = _formula(*args)
    diff = got - expected
    mistakes = _count_mistakes(v, t, d, n)
    for delta, why in mistakes:
        if diff == delta:
            return why
    for (d1, why1), (d2, why2) in itertools.combinations(mistakes, 2):
        if diff == d1 + d2:
            return f"two things: {why1} Also, {why2}"
    for perm in set(itertools.permutations(args)):
        if perm != args and got == _formula(*perm):
            return (
                "your count is right for the arguments in a different order. The signature "
                "is count_parameters(vocab_size, n_positions, n_embd, n_layer)."
            )
    return (
        f"you are off by {diff:+,} ({100 * diff / expected:+.3g}%), which is {diff / d:+,.2f}·n_embd "
        f"or {diff / (d * d):+,.3f}·n_embd². Count part by part: token and position "
        f"embeddings; per block two layer norms, attention (query/key/value and output "
        f"projections, with biases) and the MLP (n_embd → 4·n_embd → n_embd, with biases); "
        f"a final layer norm; and no separate output head."
    )


@register(
    "intro.count_parameters",
    chapter=CHAPTER,
    kind="build",
    title="Count a GPT-2-style model's parameters from its shape",
)
def check_count_parameters(fn: Any) -> str:
    """GPT-2 small must give exactly 124,439,808; then bigger, tinier and odd shapes."""
    shapes: list[tuple[str, GPTConfig]] = [
        ("GPT-2 small", GPTConfig.from_preset("gpt2")),
        ("a tiny character model", GPTConfig.from_preset("char-tiny")),
        ("GPT-2 medium", GPTConfig.from_preset("gpt2-medium")),
        ("GPT-2 XL", GPTConfig.from_preset("gpt2-xl")),
        ("GPT-3", GPTConfig.from_preset("gpt3-175b")),
        ("an odd made-up shape", GPTConfig(vocab_size=101, n_positions=37, n_embd=24, n_layer=3, n_head=1)),
    ]
    for what, cfg in shapes:
        args = (cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_layer)
        expected = reference_count(cfg)
        assert expected == _formula(*args), "the check's formula disagrees with llmbook.config"
        label = "count_parameters({}, {}, {}, {})".format(*args)
        got = whole_number(call(fn, *args, label=label), f"{label} ({what})", expected)
        if got != expected:
            raise CheckFailed(
                f"{label} is the shape of {what}.\n  expected: {expected:,}\n  got:      "
                f"{got:,}\nHint: {_explain_count(got, args)}"
            )
    return (
        "Exact for GPT-2 small (124,439,808), medium, XL, GPT-3 (174,604,259,328, the "
        "'175B'), a tiny character model and an odd shape."
    )


# --------------------------------------------------------------------------- perplexity


def _perplexity_hint(loss: float, got: float) -> str:
    guesses = [
        (2**loss, "you used 2**loss; the loss is in nats (natural log), so use math.exp."),
        (10**loss, "you used 10**loss; the loss is in nats (natural log), so use math.exp."),
        (math.exp(-loss), "perplexity is exp(+loss): higher loss, higher perplexity."),
        (loss, "you returned the loss itself; perplexity is exp(loss)."),
    ]
    if loss > 0:
        guesses.append((math.log(loss), "use math.exp, the inverse of the log, not math.log."))
    for value, why in guesses:
        if close(got, value) and not close(got, math.exp(loss)):
            return why
    return "perplexity = exp(mean cross-entropy in nats)."


@register(
    "intro.perplexity",
    chapter=CHAPTER,
    kind="formula",
    title="Perplexity from a mean cross-entropy loss",
)
def check_perplexity(fn: Any) -> str:
    """exp(loss) on several losses, including the uniform guess over 65 characters."""
    losses = [0.0, math.log(65), 1.0, 2.0, 0.5, 3.3, math.log(50257)]
    for loss in losses:
        label = f"perplexity({loss!r})"
        expected = math.exp(loss)
        value = float(number(call(fn, loss, label=label), label, expected))
        if not close(value, expected):
            context = ""
            if loss == math.log(65):
                context = (
                    " A model that guesses uniformly among 65 characters has loss "
                    "ln 65 ≈ 4.174 nats, and its perplexity should be exactly 65: it is as "
                    "unsure as a 65-way fair die."
                )
            raise CheckFailed(
                f"{label} is wrong.{context}\n  expected: {expected:.10g}\n  got:      "
                f"{value:.10g}\nHint: {_perplexity_hint(loss, value)}"
            )
    return (
        "Correct for all losses: 0 nats gives 1 (a model that is never unsure), ln 65 gives 65 "
        "(a uniform guess among 65 characters), ln 50257 gives 50,257 (GPT-2's vocabulary)."
    )
