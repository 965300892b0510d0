"""Checks for chapter 4, "Before transformers: next-word prediction and the limits of RNNs".

Four exercises rebuild the pieces of the chapter's pre-transformer models: the
(context, target) pairs a fixed-window model trains on, one step of an Elman RNN, one
step of an LSTM with its four gates, and the number of parameters in PyTorch's
recurrent layers. The RNN and LSTM steps take their weights in PyTorch's layout and are
compared with ``nn.RNNCell`` and ``nn.LSTMCell`` loaded with the same weights. When an
answer differs, the feedback names the input, shows expected and actual values, and
recognises the usual mistakes (an off-by-one target, a missing tanh, transposed
weights, a forgotten bias, the gates in the wrong order, ...) by computing each
mistake's result and comparing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from llmbook.exercises.compare import (
    head,
    known_mistake,
    same,
    tensor_answer,
    tensor_tuple,
    token_ids,
    whole_number,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "04"

_TRANSPOSE = ("PyTorch stores a weight as (out_features, in_features), so a layer computes "
              "x @ weight.T + bias. Print the shapes of your tensors.")
SHAPE_HINTS = [("cannot be multiplied", _TRANSPOSE), ("size of tensor", _TRANSPOSE)]
"""The errors that matrix code with transposed weights raises, and what to do about them."""


# --------------------------------------------------------------------------- window pairs


def reference_window_pairs(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every run of n consecutive tokens, and the token that follows it."""
    count = max(len(ids) - n, 0)
    contexts = torch.stack([ids[i : i + n] for i in range(count)]) if count else ids.new_empty(0, n)
    return contexts.long(), ids[n:].long()


def _window_hint(ids: torch.Tensor, n: int, contexts: Any, targets: Any) -> str:
    count = len(ids) - n
    if (isinstance(targets, torch.Tensor) and count > 0 and len(targets) == count
            and torch.equal(targets.long(), ids[n - 1 : n - 1 + count].long())):
        return ("each target is the last word of its own context. The target is the word "
                "*after* the context: for contexts[i] = ids[i:i+n] it is ids[i+n].")
    if isinstance(contexts, torch.Tensor) and contexts.dim() == 2 and count > 0:
        expected = reference_window_pairs(ids, n)[0]
        if tuple(contexts.shape) == (n, count) and torch.equal(contexts.T.long(), expected):
            return "the contexts are transposed: one row per pair, so shape (len(ids) - n, n)."
        if tuple(contexts.shape) == (count + 1, n):
            return ("you made one context too many: the last window has no word after it, so it "
                    "has no target. There are len(ids) - n pairs.")
        if tuple(contexts.shape) == (count, n) and torch.equal(contexts.flip(1).long(), expected):
            return "the words of each context are reversed: keep them in reading order, ids[i:i+n]."
    return "contexts[i] should be ids[i:i+n] and targets[i] should be ids[i+n], for every i that has a target."


@register("recurrent.window_pairs", chapter=CHAPTER, title="Fixed-window (context, target) pairs")
def check_window_pairs(fn: Any) -> str:
    """Several token sequences and window sizes, including one with no complete pair."""
    gen = torch.Generator().manual_seed(4)
    cases = [
        (torch.tensor([5, 7, 9, 11, 13]), 3),
        (torch.tensor([1, 2, 3, 4]), 1),
        (torch.randint(0, 50, (20,), generator=gen), 3),
        (torch.randint(0, 1000, (12,), generator=gen), 5),
        (torch.tensor([4, 8, 15, 16, 23, 42]), 5),
        (torch.tensor([3, 1, 4]), 3),
    ]
    for ids, n in cases:
        label = f"window_pairs(torch.tensor({ids.tolist()}), n={n})"
        got = call(fn, ids.clone(), n, label=label, hints=SHAPE_HINTS)
        expected = reference_window_pairs(ids, n)
        contexts, targets = tensor_tuple(got, label, ("contexts", "targets"), expected=expected,
                                         hint="build them as torch tensors, e.g. with torch.stack.")
        if len(ids) == n and (contexts.numel() or targets.numel()):
            raise mismatch(f"{label}: with exactly n words there is no word after a window, so there "
                           f"are no pairs.", expected, got,
                           "return empty tensors of shapes (0, n) and (0,), e.g. ids.new_empty(0, n).")
        if tuple(contexts.shape) != tuple(expected[0].shape) or tuple(targets.shape) != tuple(expected[1].shape):
            raise CheckFailed(
                f"{label} returned contexts of shape {tuple(contexts.shape)} and targets of shape "
                f"{tuple(targets.shape)}; expected {tuple(expected[0].shape)} and "
                f"{tuple(expected[1].shape)}: one row of n words per pair, len(ids) - n pairs.\n"
                f"Hint: {_window_hint(ids, n, contexts, targets)}"
            )
        token_ids(contexts, label, "contexts")
        token_ids(targets, label, "targets")
        if not (torch.equal(contexts, expected[0]) and torch.equal(targets, expected[1])):
            raise mismatch(f"{label} returned the wrong pairs.", expected, got,
                           _window_hint(ids, n, contexts, targets))
    return ("Correct on 6 cases: len(ids) - n pairs, each n words in reading order followed by "
            "the next word.")


# --------------------------------------------------------------------------- RNN step


def _rnn_inputs(b: int, d_in: int, d_h: int, gen: torch.Generator) -> list[torch.Tensor]:
    return [
        torch.randn(b, d_in, generator=gen),
        torch.randn(b, d_h, generator=gen) * 0.5,
        torch.randn(d_h, d_in, generator=gen) * 0.5,
        torch.randn(d_h, d_h, generator=gen) * 0.5,
        torch.randn(d_h, generator=gen) * 0.3,
        torch.randn(d_h, generator=gen) * 0.3,
    ]


def _rnn_mistakes(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                  b_ih: torch.Tensor, b_hh: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    mistakes = [
        (pre, "you forgot the tanh: h_new = tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)."),
        (torch.sigmoid(pre), "an Elman RNN in PyTorch uses tanh, not the sigmoid."),
        (torch.relu(pre), "nn.RNN's default nonlinearity is tanh, not ReLU."),
        (torch.tanh(x @ w_ih.T + h @ w_hh.T + b_ih), "you left out bias_hh."),
        (torch.tanh(x @ w_ih.T + h @ w_hh.T + b_hh), "you left out bias_ih."),
        (torch.tanh(x @ w_ih.T + h @ w_hh.T), "you left out both biases."),
        (torch.tanh(x @ w_ih.T + b_ih + b_hh), ("the previous hidden state h must enter too: add "
                                                "h @ weight_hh.T. Without it the network has no memory.")),
        (torch.tanh(x @ w_ih.T + b_ih + b_hh + h),
         "h enters through its weights: h @ weight_hh.T, not h itself."),
    ]
    if w_ih.shape[0] == w_ih.shape[1]:
        mistakes += [
            (torch.tanh(x @ w_ih + b_ih + h @ w_hh + b_hh),
             "the weights are (out_features, in_features): multiply by their transpose, x @ weight_ih.T."),
            (torch.tanh(x @ w_hh.T + b_ih + h @ w_ih.T + b_hh),
             "weight_ih multiplies the input x and weight_hh the hidden state h; you swapped them."),
        ]
    return mistakes


@register("recurrent.rnn_step", chapter=CHAPTER, title="One step of an Elman RNN")
def check_rnn_step(fn: Callable[..., Any]) -> str:
    """Compared with nn.RNNCell loaded with the same weights, on several shapes."""
    gen = torch.Generator().manual_seed(41)
    for b, d_in, d_h in [(2, 3, 4), (1, 5, 5), (4, 8, 16), (3, 1, 2)]:
        args = _rnn_inputs(b, d_in, d_h, gen)
        cell = nn.RNNCell(d_in, d_h)
        with torch.no_grad():
            for p, value in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh), args[2:], strict=True):
                p.copy_(value)
            expected = cell(args[0], args[1])
        label = (f"rnn_step(x {(b, d_in)}, h {(b, d_h)}, weight_ih {(d_h, d_in)}, weight_hh "
                 f"{(d_h, d_h)}, bias_ih {(d_h,)}, bias_hh {(d_h,)})")
        with torch.no_grad():
            got = call(fn, *[a.clone() for a in args], label=label, hints=SHAPE_HINTS)
        got = tensor_answer(got, label, shape=(b, d_h), expected=head(expected),
                            hint="return the new hidden state, a tensor.",
                            shape_hint="one hidden vector of hidden_size numbers per sequence "
                                       "in the batch.")
        if not same(got, expected):
            hint = known_mistake(got, _rnn_mistakes(*args)) or (
                "h_new = tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).")
            raise mismatch(f"{label} does not match nn.RNNCell with the same weights (first numbers shown).",
                           head(expected), head(got), hint)
    return "Your step matches torch.nn.RNNCell on 4 shapes: tanh of both weighted inputs and both biases."


# --------------------------------------------------------------------------- LSTM step


def reference_lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, order=(0, 1, 2, 3), h_tanh=True,
                        use_input=True, g_act=torch.tanh):
    """One LSTM step, optionally with one of the usual mistakes built in."""
    chunks = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    i, f, g, o = (chunks[k] for k in order)
    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), g_act(g)
    c_new = f * c + (i * g if use_input else g)
    h_new = o * (torch.tanh(c_new) if h_tanh else c_new)
    return h_new, c_new


_LSTM_MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"order": (0, 1, 3, 2)}, ("the gates are in the wrong order: PyTorch packs them as input, forget, "
                               "candidate (g), output; you used i, f, o, g.")),
    ({"order": (1, 0, 2, 3)}, "input and forget gates are swapped: the order is i, f, g, o."),
    ({"order": (0, 2, 1, 3)}, "forget gate and candidate are swapped: the order is i, f, g, o."),
    ({"order": (3, 1, 2, 0)}, "input and output gates are swapped: the order is i, f, g, o."),
    ({"h_tanh": False}, "the new hidden state is o * tanh(c_new), not o * c_new."),
    ({"use_input": False}, "the candidate must pass through the input gate: c_new = f * c + i * g."),
    ({"g_act": torch.sigmoid}, "the candidate g uses tanh (values in -1..1); only the gates i, f, o use the sigmoid."),
]


@register("recurrent.lstm_step", chapter=CHAPTER, title="One step of an LSTM, with its gates")
def check_lstm_step(fn: Callable[..., Any]) -> str:
    """Compared with nn.LSTMCell loaded with the same weights, on several shapes."""
    gen = torch.Generator().manual_seed(42)
    for b, d_in, d_h in [(2, 3, 4), (1, 6, 2), (3, 8, 16), (2, 1, 3)]:
        x = torch.randn(b, d_in, generator=gen)
        h, c = torch.randn(b, d_h, generator=gen) * 0.5, torch.randn(b, d_h, generator=gen)
        w_ih = torch.randn(4 * d_h, d_in, generator=gen) * 0.6
        w_hh = torch.randn(4 * d_h, d_h, generator=gen) * 0.6
        b_ih, b_hh = torch.randn(4 * d_h, generator=gen) * 0.3, torch.randn(4 * d_h, generator=gen) * 0.3
        cell = nn.LSTMCell(d_in, d_h)
        with torch.no_grad():
            for p, value in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh),
                                (w_ih, w_hh, b_ih, b_hh), strict=True):
                p.copy_(value)
            expected_h, expected_c = cell(x, (h, c))
        args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
        label = (f"lstm_step(x {(b, d_in)}, h {(b, d_h)}, c {(b, d_h)}, weight_ih {(4 * d_h, d_in)}, "
                 f"weight_hh {(4 * d_h, d_h)}, bias_ih {(4 * d_h,)}, bias_hh {(4 * d_h,)})")
        with torch.no_grad():
            got = call(fn, *[a.clone() for a in args], label=label, hints=SHAPE_HINTS)
        got_h, got_c = tensor_tuple(got, label, ("h_new", "c_new"),
                                    expected=(head(expected_h), head(expected_c)))
        for name, value in (("h_new", got_h), ("c_new", got_c)):
            if tuple(value.shape) != (b, d_h):
                raise CheckFailed(f"{label}: {name} should be a tensor of shape {(b, d_h)}, got "
                                  f"{describe(value)}.")
        if same(got_h, expected_c) and same(got_c, expected_h):
            raise CheckFailed(f"{label}: you returned (c_new, h_new); return (h_new, c_new), in that order.")
        if not (same(got_h, expected_h) and same(got_c, expected_c)):
            hint = "follow the equations: gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh, split in 4 (i, f, g, o)."
            for mistake, why in _LSTM_MISTAKES:
                mh, mc = reference_lstm_step(*args, **mistake)
                if same(got_h, mh) and same(got_c, mc):
                    hint = why
                    break
            else:
                if same(got_c, expected_c):
                    hint = "c_new is right, so look at h_new = o * tanh(c_new), with o = sigmoid(4th chunk)."
            which = "c_new" if not same(got_c, expected_c) else "h_new"
            exp, val = (expected_c, got_c) if which == "c_new" else (expected_h, got_h)
            raise mismatch(f"{label}: {which} does not match nn.LSTMCell with the same weights "
                           f"(first numbers shown).", head(exp), head(val), hint)
    return ("Your LSTM step matches torch.nn.LSTMCell on 4 shapes: gates in PyTorch's order "
            "i, f, g, o, c_new = f*c + i*g, h_new = o*tanh(c_new).")


# --------------------------------------------------------------------------- parameter count


def reference_parameter_count(input_size: int, hidden_size: int, num_layers: int = 1, cell: str = "rnn") -> int:
    gates = {"rnn": 1, "lstm": 4}[cell]
    total = 0
    for layer in range(num_layers):
        d_in = input_size if layer == 0 else hidden_size
        total += gates * hidden_size * (d_in + hidden_size + 2)
    return total


def _count_mistakes(d_in: int, h: int, layers: int, cell: str) -> list[tuple[int, str]]:
    gates = {"rnn": 1, "lstm": 4}[cell]
    right = reference_parameter_count(d_in, h, layers, cell)
    first_only = gates * h * (d_in + h + 2) * layers
    return [
        (right - gates * h * layers, ("PyTorch gives every layer two bias vectors, bias_ih and bias_hh "
                                      "(redundant, but that is how it is stored); count both.")),
        (right - 2 * gates * h * layers, "count the biases too: bias_ih and bias_hh, hidden_size each per gate."),
        (reference_parameter_count(d_in, h, layers, "rnn"),
         "an LSTM has four gates (i, f, g, o), each with its own weights and biases: 4x an RNN's."),
        (first_only, ("layers after the first read the hidden state of the layer below, so their "
                      "input size is hidden_size, not input_size.")),
        (right - gates * h * h * layers,
         "each layer also has the hidden-to-hidden matrix weight_hh (hidden_size x hidden_size)."),
        (reference_parameter_count(d_in, h, 1, cell), "count every layer: num_layers of them."),
    ]


@register("recurrent.parameter_count", chapter=CHAPTER, title="Counting the parameters of RNN and LSTM layers")
def check_parameter_count(fn: Callable[..., Any]) -> str:
    """Compared with the parameters of real nn.RNN and nn.LSTM modules of several shapes."""
    cases = [(10, 20, 1, "rnn"), (64, 128, 1, "lstm"), (8, 16, 2, "rnn"), (32, 64, 3, "lstm"),
             (1, 1, 1, "rnn"), (300, 100, 2, "lstm"), (16, 16, 1, "lstm")]
    for d_in, h, layers, cell in cases:
        label = f"parameter_count({d_in}, {h}, num_layers={layers}, cell={cell!r})"
        module = {"rnn": nn.RNN, "lstm": nn.LSTM}[cell](d_in, h, num_layers=layers)
        expected = sum(p.numel() for p in module.parameters())
        assert expected == reference_parameter_count(d_in, h, layers, cell)
        got = whole_number(call(fn, d_in, h, layers, cell, label=label, hints=SHAPE_HINTS), label, expected,
                           floats_ok=True)
        if got != expected:
            hint = known_mistake(got, _count_mistakes(d_in, h, layers, cell)) or (
                "per layer and gate: hidden_size x (layer input size + hidden_size) weights "
                "plus 2 x hidden_size biases.")
            shapes = ", ".join(f"{name} {tuple(p.shape)}" for name, p in list(module.named_parameters())[:4])
            raise mismatch(f"{label} is not the number of parameters of torch.nn.{module.__class__.__name__}"
                           f"({d_in}, {h}, num_layers={layers}), whose first layer holds {shapes}.",
                           expected, got, hint)
    return ("Your counts match torch.nn.RNN and torch.nn.LSTM on 7 shapes (1 to 3 layers), "
            "both biases and all four LSTM gates included.")
