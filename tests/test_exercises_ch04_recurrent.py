"""Chapter 4's checks (``llmbook.exercises.checks.ch04_recurrent``): the table that
test_exercises_checks.py runs. Every failure names the call that failed."""

from __future__ import annotations

import torch

CHAPTER = "04"


def window_pairs(ids, n):
    count = len(ids) - n
    if count <= 0:
        return ids.new_empty(0, n), ids.new_empty(0)
    return torch.stack([ids[i : i + n] for i in range(count)]), ids[n:]


def window_pairs_unfold(ids, n):
    return ids[:-1].unfold(0, n, 1) if len(ids) > n else ids.new_empty(0, n), ids[n:]


def rnn_step(x, h, w_ih, w_hh, b_ih, b_hh):
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, order=(0, 1, 2, 3), h_tanh=True, use_input=True):
    chunks = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    i, f, g, o = (chunks[k] for k in order)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + (i * g if use_input else g)
    return o * (torch.tanh(c_new) if h_tanh else c_new), c_new


def parameter_count(input_size, hidden_size, num_layers=1, cell="rnn"):
    gates = {"rnn": 1, "lstm": 4}[cell]
    return sum(gates * hidden_size * ((input_size if layer == 0 else hidden_size) + hidden_size + 2)
               for layer in range(num_layers))


CORRECT = {
    "recurrent.window_pairs": [window_pairs, window_pairs_unfold],
    "recurrent.rnn_step": [
        rnn_step,
        lambda x, h, wi, wh, bi, bh: torch.nn.functional.linear(x, wi, bi + bh).add(h @ wh.T).tanh(),
    ],
    "recurrent.lstm_step": [lstm_step, lambda *a: list(lstm_step(*a))],
    "recurrent.parameter_count": [parameter_count, lambda *a: float(parameter_count(*a))],
}


def _contexts(ids, n, count_extra=0):
    count = len(ids) - n + count_extra
    return torch.stack([ids[i : i + n] for i in range(count)]) if count > 0 else ids.new_empty(0, n)


def _no_edge_case(ids, n):
    return torch.stack([ids[i : i + n] for i in range(max(len(ids) - n, 1))]), ids[n:]


def _swapped_weights(x, h, wi, wh, bi, bh):
    """Only square weights let the swap run at all; the check finds it there."""
    if wi.shape[0] == wi.shape[1]:
        return torch.tanh(x @ wh.T + bi + h @ wi.T + bh)
    return rnn_step(x, h, wi, wh, bi, bh)


def _sigmoid_candidate(x, h, c, wi, wh, bi, bh):
    i, f, g, o = torch.sigmoid(x @ wi.T + bi + h @ wh.T + bh).chunk(4, dim=-1)
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def _fewer(d, h, n, cell, per_layer):
    return parameter_count(d, h, n, cell) - {"rnn": 1, "lstm": 4}[cell] * per_layer * n


WINDOW, RNN, LSTM, COUNT = "window_pairs(torch.tensor(", "rnn_step(x (", "lstm_step(x (", "parameter_count("
MISTAKES = {
    "recurrent.window_pairs": [
        (lambda ids, n: (_contexts(ids, n), ids[n - 1 : -1]), (WINDOW, "last word of its own context")),
        (lambda ids, n: (_contexts(ids, n, 1), ids[n:]), (WINDOW, "one context too many")),
        (lambda ids, n: (_contexts(ids, n).flip(1), ids[n:]), (WINDOW, "reversed")),
        (lambda ids, n: (_contexts(ids, n).T, ids[n:]), (WINDOW, "transposed")),
        (lambda ids, n: (_contexts(ids, n).float(), ids[n:].float()), (WINDOW, "torch.long")),
        (lambda ids, n: ([ids[i : i + n].tolist() for i in range(len(ids) - n)], ids[n:].tolist()),
         (WINDOW, "torch tensors")),
        (lambda ids, n: _contexts(ids, n), (WINDOW, "two tensors")),
        (_no_edge_case, (WINDOW, "no pairs")),
    ],
    "recurrent.rnn_step": [
        (lambda x, h, wi, wh, bi, bh: x @ wi.T + bi + h @ wh.T + bh, (RNN, "forgot the tanh")),
        (lambda x, h, wi, wh, bi, bh: torch.sigmoid(x @ wi.T + bi + h @ wh.T + bh), (RNN, "not the sigmoid")),
        (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi.T + bi + h @ wh.T), (RNN, "left out bias_hh")),
        (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi.T + h @ wh.T), (RNN, "both biases")),
        (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi.T + bi + bh), (RNN, "no memory")),
        (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi + bi + h @ wh + bh), (RNN, "weight.T")),
        (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi.T + bi + h @ wh.T + bh)[:1], (RNN, "shape")),
        (lambda x, h, wi, wh, bi, bh: None, (RNN, "a tensor")),
        (_swapped_weights, (RNN, "swapped")),
        (lambda x, h, wi, wh, bi, bh: x @ wh + h, (RNN, "x @ weight.T")),  # raises: the error's hint
    ],
    "recurrent.lstm_step": [
        (lambda *a: lstm_step(*a, order=(0, 1, 3, 2)), (LSTM, "wrong order")),
        (lambda *a: lstm_step(*a, order=(1, 0, 2, 3)), (LSTM, "input and forget gates are swapped")),
        (lambda *a: lstm_step(*a, h_tanh=False), (LSTM, "o * tanh(c_new)")),
        (lambda *a: lstm_step(*a, use_input=False), (LSTM, "input gate")),
        (lambda *a: lstm_step(*a)[::-1], (LSTM, "(h_new, c_new), in that order")),
        (_sigmoid_candidate, (LSTM, "candidate g uses tanh")),
        (lambda *a: lstm_step(*a)[0], (LSTM, "two tensors")),
    ],
    "recurrent.parameter_count": [
        (lambda d, h, n=1, cell="rnn": _fewer(d, h, n, cell, h), (COUNT, "two bias vectors")),
        (lambda d, h, n=1, cell="rnn": parameter_count(d, h, n, "rnn"), (COUNT, "four gates")),
        (lambda d, h, n=1, cell="rnn": parameter_count(d, h, 1, cell) * n, (COUNT, "input size is hidden_size")),
        (lambda d, h, n=1, cell="rnn": parameter_count(d, h, 1, cell), (COUNT, "num_layers")),
        (lambda d, h, n=1, cell="rnn": _fewer(d, h, n, cell, h * h), (COUNT, "weight_hh")),
        (lambda d, h, n=1, cell="rnn": "many", (COUNT, "whole number")),
    ],
}
