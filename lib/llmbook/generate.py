"""Turning next-token distributions into text: greedy, temperature, top-k, top-p (chapters 1, 7, 8).

A language model only ever predicts one distribution over the next token. Generation
is the loop around it: pick a token, append it, predict again. With a ``KVCache`` each
step feeds only the new token and reuses the keys and values of the prefix, which
gives the same tokens (tested) for a fraction of the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llmbook.attention import KVCache
from llmbook.model import GPT


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token from (B, V) logits; returns (B,) token ids.

    temperature 0 is greedy (argmax). Otherwise logits are divided by the temperature
    (below 1 sharpens, above 1 flattens), cut to the ``top_k`` most likely tokens and/or
    to the smallest set whose probability reaches ``top_p``, and sampled.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filtered_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def filtered_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The distribution that sampling draws from, after temperature, top-k and top-p."""
    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first always stays).
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.softmax(logits, dim=-1)


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, width - len(p):] = True
    return ids, mask


@torch.no_grad()
def generate(
    model: GPT,
    prompts: torch.Tensor | Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    crop_context: bool = False,
) -> torch.Tensor | list[list[int]]:
    """Continue a batch of prompts by up to ``max_new_tokens`` tokens.

    ``prompts`` is a (B, T) tensor of equal-length prompts, or a list of token lists of
    any lengths (they are left-padded and the padding is masked out of attention).
    A tensor comes back as a (B, T + n) tensor; a list comes back as a list of full
    token lists. A row that produces ``stop_token`` stops there (the stop token is
    kept); generation ends early when every row has stopped.

    The prompt plus the new tokens must fit the context window, or the call fails
    before doing any work. With ``crop_context=True`` the model instead sees only the
    last ``n_positions`` tokens once the window is full (the oldest slide out); a prompt
    longer than the window is then read from its last ``n_positions`` tokens, and is
    still returned whole.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    key_mask: torch.Tensor | None
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 1:
            raise ValueError("prompts must be (batch, time); add a batch dimension with prompts[None]")
        ids, key_mask = prompts.to(device), None
    else:
        ids, key_mask = _left_pad(prompts, pad_id=0)
        ids, key_mask = ids.to(device), key_mask.to(device)
        if bool(key_mask.all()):
            key_mask = None
    B, T = ids.shape
    limit = model.config.n_positions
    if T + max_new_tokens > limit and not crop_context:
        if T > limit:
            fix = f"keep the prompt's last {limit} tokens (prompt[:, -{limit}:] or p[-{limit}:])"
        else:
            fix = (f"shorten the prompt to at most {max(limit - max_new_tokens, 0)} tokens or ask for "
                   f"at most {limit - T} new tokens")
        raise ValueError(
            f"the prompt ({T} tokens) plus max_new_tokens ({max_new_tokens}) is {T + max_new_tokens} tokens, "
            f"more than the model's context window of {limit}; {fix}, or pass crop_context=True to let "
            f"the oldest tokens slide out of the window"
        )
    was_training = model.training
    model.eval()
    try:
        # Room for the prompt and the new tokens, allocated once (never more than the window).
        room = max(1, min(T + max_new_tokens, limit))
        cache = KVCache(model.config.n_layer, max_length=room) if use_cache else None
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        seq, mask = ids, key_mask
        step_input = ids
        for _ in range(max_new_tokens):
            if cache is not None and cache.length + step_input.shape[1] > limit:
                cache = None  # the window is full: from here on, recompute over the last `limit` tokens
            if cache is not None:
                model_input, window_mask = step_input, mask
            else:
                model_input = seq[:, -limit:]
                window_mask = mask[:, -limit:] if mask is not None else None
            positions = None
            if window_mask is not None:  # left padding: count positions from each row's first real token
                positions = (window_mask.long().cumsum(dim=1) - 1).clamp(min=0)[:, -model_input.shape[1]:]
            logits, _ = model(model_input, cache=cache, key_mask=window_mask, positions=positions,
                              last_only=True)
            nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            if stop_token is not None:
                nxt = torch.where(finished, torch.full_like(nxt, stop_token), nxt)
                finished |= nxt == stop_token
            nxt = nxt.unsqueeze(1)
            seq = torch.cat([seq, nxt], dim=1)
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(nxt, dtype=torch.bool)], dim=1)
            step_input = nxt
            if stop_token is not None and bool(finished.all()):
                break
    finally:
        model.train(was_training)
    out = seq
    if isinstance(prompts, torch.Tensor):
        return out
    results = []
    for row, prompt in enumerate(prompts):
        new = out[row, T:].tolist()
        if stop_token is not None and stop_token in new:
            new = new[: new.index(stop_token) + 1]
        results.append(list(prompt) + new)
    return results


def generate_text(
    model: GPT,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    **kwargs: Any,
) -> str:
    """Encode ``prompt``, generate, and decode only the new tokens."""
    ids = tokenizer.encode(prompt)
    out = generate(model, [ids], max_new_tokens, **kwargs)[0]
    return tokenizer.decode(out[len(ids):])
