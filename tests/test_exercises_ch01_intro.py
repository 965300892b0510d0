"""Chapter 1's checks (``llmbook.exercises.checks.ch01_intro``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import math

import torch

CHAPTER = "01"


def build_vocab(text: str) -> tuple[dict[str, int], dict[int, str]]:
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    return stoi, {i: c for c, i in stoi.items()}


def encode(text: str, stoi: dict[str, int]) -> list[int]:
    return [stoi[c] for c in text]


def decode(ids: list[int], itos: dict[int, str]) -> str:
    return "".join(itos[i] for i in ids)


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    z = logits / temperature
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def sample_tokens(next_logits, prompt, new_tokens, temperature, generator):
    ids = list(prompt)
    for _ in range(new_tokens):
        probs = softmax_with_temperature(next_logits(ids), temperature)
        ids.append(int(torch.multinomial(probs, num_samples=1, generator=generator)))
    return ids


def sample_tokens_tensor(next_logits, prompt, new_tokens, temperature, generator):
    """Another correct way: keep the ids in a tensor, use torch.softmax and .multinomial."""
    ids = torch.tensor(prompt)
    for _ in range(new_tokens):
        probs = torch.softmax(next_logits(ids.tolist()) / temperature, dim=-1)
        ids = torch.cat([ids, probs.multinomial(1, generator=generator)])
    return ids


def _sampler(pick="sample", scale=1, context="all", keep_prompt=True, seeded=True):
    def sample(next_logits, prompt, new_tokens, temperature, generator):
        ids = list(prompt)
        for _ in range(new_tokens):
            logits = next_logits(ids if context == "all" else list(prompt))
            t = temperature if scale == 1 else (1 / temperature if scale == -1 else 1.0)
            probs = softmax_with_temperature(logits, t)
            if pick == "greedy":
                ids.append(int(probs.argmax()))
            else:
                g = generator if seeded else None
                ids.append(int(torch.multinomial(probs, 1, generator=g)))
        return ids if keep_prompt else ids[len(prompt) :]

    return sample


def count_parameters(v: int, t: int, d: int, n: int) -> int:
    return v * d + t * d + n * (12 * d * d + 13 * d) + 2 * d


CORRECT = {
    "intro.char_tokenizer": [(build_vocab, encode, decode)],
    "intro.softmax_with_temperature": [softmax_with_temperature, lambda z, t: torch.softmax(z / t, dim=-1)],
    "intro.sample": [sample_tokens, sample_tokens_tensor],
    "intro.count_parameters": [count_parameters],
    "intro.perplexity": [math.exp],
}


def _first_seen(text: str) -> tuple[dict[str, int], dict[int, str]]:
    stoi = {c: i for i, c in enumerate(dict.fromkeys(text))}
    return stoi, {i: c for c, i in stoi.items()}


def _unstable(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    e = torch.exp(logits / temperature)
    return e / e.sum(dim=-1, keepdim=True)


def _in_place(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logits -= logits.max(dim=-1, keepdim=True).values
    return softmax_with_temperature(logits, temperature)


MISTAKES = {
    "intro.char_tokenizer": [
        ((_first_seen, encode, decode), "sorted(set(text))"),
        ((build_vocab, encode, lambda ids, itos: list(ids)), "''.join"),
        (build_vocab, "(build_vocab, encode, decode)"),  # forgot to pass all three
    ],
    "intro.softmax_with_temperature": [
        (_unstable, "subtract the max"),
        (lambda x, t: softmax_with_temperature(x, 1.0), ("temperature", "divide")),
        (_in_place, "in-place"),
    ],
    "intro.sample": [
        (_sampler(pick="greedy"), ("prompt=[3]", "expected", "got", "greedy decoding")),
        (_sampler(seeded=False), "generator=generator"),
        (_sampler(scale=-1), ("temperature=0.5", "multiplied the logits")),
        (_sampler(scale=0), ("temperature=0.5", "made no difference")),
        (_sampler(keep_prompt=False), "only the new tokens"),
        (_sampler(context="prompt"), "the ids so far"),
        (lambda f, p, n, t, g: [int(torch.multinomial(f(p) / t, 1, generator=g))], "softmax first"),
    ],
    "intro.count_parameters": [
        # GPT-2 small is tried first, and the hint comes from the size of the error.
        (lambda v, t, d, n: count_parameters(v, t, d, n) + v * d, ("124,439,808", "lm_head")),
        (lambda v, t, d, n: count_parameters(v, t, d, n) - t * d, ("124,439,808", "position embeddings")),
        (lambda v, t, d, n: count_parameters(v, t, d, n) - 9 * n * d, ("124,439,808", "biases")),
        (lambda v, t, d, n: count_parameters(v, t, d, n) - n * 13 * d - 2 * d, ("124,439,808", "layer norms")),
        (lambda *a: float(count_parameters(*a)), "int"),
    ],
    "intro.perplexity": [
        # names the input, the values and the mistake: nats need e, not 2
        (lambda loss: 2**loss, ("perplexity(", "expected", "got", "math.exp")),
        # right everywhere except near ln 65, so the ln 65 case is the one that fails
        (lambda x: math.exp(x) + (1.0 if 4 < x < 5 else 0.0), ("65", "uniformly")),
    ],
}
