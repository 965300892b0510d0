"""Chapter 4's checks (``llmbook.exercises.checks.ch04_recurrent``): the table that
test_exercises_checks.py runs. Every failure names the call that failed."""

from __future__ import annotations

import torch

CHAPTER = "04"


def rnn_step(x, h, w_ih, w_hh, b_ih, b_hh):
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def gradient_norms(xs, weight_ih, weight_hh, bias_ih, bias_hh):
    h = torch.zeros(xs.shape[0], weight_hh.shape[0], requires_grad=True)
    states = []
    for t in range(xs.shape[1]):
        h = rnn_step(xs[:, t], h, weight_ih, weight_hh, bias_ih, bias_hh)
        states.append(h)
    grads = torch.autograd.grad(h.sum(), states)
    return torch.stack([g.norm() for g in grads])


def gradient_norms_by_hand(xs, weight_ih, weight_hh, bias_ih, bias_hh, slip=None):
    """The backward pass written out: dL/dh_(t-1) = (dL/dh_t * (1 - h_t**2)) @ W_hh."""
    h, states = torch.zeros(xs.shape[0], weight_hh.shape[0]), []
    for t in range(xs.shape[1]):
        h = rnn_step(xs[:, t], h, weight_ih, weight_hh, bias_ih, bias_hh)
        states.append(h)
    g, norms = torch.ones_like(h), []
    for h in reversed(states):
        through = g if slip == "no slope" else g * (1 - h**2)
        norms.append((through if slip == "pre" else g).norm())
        g = through @ (weight_hh.T if slip == "transpose" else weight_hh)
    return torch.stack(norms[::-1])


def _with_states(fn):
    """Run the RNN keeping a graph, then hand (states, h_T, xs) to fn."""

    def answer(xs, wi, wh, bi, bh):
        xs = xs.clone().requires_grad_(True)
        h, states = torch.zeros(xs.shape[0], wh.shape[0], requires_grad=True), []
        for t in range(xs.shape[1]):
            h = rnn_step(xs[:, t], h, wi, wh, bi, bh)
            states.append(h)
        return fn(states, h, xs)

    return answer


def _detached(xs, wi, wh, bi, bh):
    h, states = torch.zeros(xs.shape[0], wh.shape[0]), []
    for t in range(xs.shape[1]):
        h = rnn_step(xs[:, t], h.detach(), wi, wh, bi, bh)
        if t == xs.shape[1] - 1:
            h.requires_grad_(True)
        states.append(h)
    h.sum().backward()
    return torch.stack([(s.grad if s.grad is not None else torch.zeros_like(s)).norm() for s in states])


def _no_retain_grad(xs, wi, wh, bi, bh):
    h, states = torch.zeros(xs.shape[0], wh.shape[0], requires_grad=True), []
    for t in range(xs.shape[1]):
        h = rnn_step(xs[:, t], h, wi, wh, bi, bh)
        states.append(h)
    h.sum().backward()
    return torch.stack([s.grad.norm() for s in states])


def _no_graph(xs, wi, wh, bi, bh):
    h, states = torch.zeros(xs.shape[0], wh.shape[0]), []
    for t in range(xs.shape[1]):
        h = rnn_step(xs[:, t], h, wi, wh, bi, bh)
        states.append(h)
    return torch.stack([g.norm() for g in torch.autograd.grad(h.sum(), states)])


def recall_settings():
    return {"cell": "lstm", "lr": 1e-2, "forget_bias": 2.0, "shortest_distance": 6}


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, order=(0, 1, 2, 3), h_tanh=True, use_input=True):
    chunks = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    i, f, g, o = (chunks[k] for k in order)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + (i * g if use_input else g)
    return o * (torch.tanh(c_new) if h_tanh else c_new), c_new


def parameter_count(input_size, hidden_size, num_layers=1, cell="rnn"):
    gates = {"rnn": 1, "lstm": 4}[cell]
    return sum(
        gates * hidden_size * ((input_size if layer == 0 else hidden_size) + hidden_size + 2)
        for layer in range(num_layers)
    )


CORRECT = {
    "recurrent.rnn_step": [
        rnn_step,
        lambda x, h, wi, wh, bi, bh: torch.nn.functional.linear(x, wi, bi + bh).add(h @ wh.T).tanh(),
    ],
    "recurrent.gradient_norms": [gradient_norms, gradient_norms_by_hand],
    "recurrent.lstm_step": [lstm_step, lambda *a: list(lstm_step(*a))],
    "recurrent.parameter_count": [parameter_count, lambda *a: float(parameter_count(*a))],
    "recurrent.remember_16": [
        recall_settings,
        lambda: {"cell": "lstm", "lr": 3e-3, "forget_bias": 2.0, "shortest_distance": 6},
    ],
}


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


RNN, GRAD, LSTM, COUNT = "rnn_step(x (", "gradient_norms(xs (", "lstm_step(x (", "parameter_count("
RECALL = "recall_settings() = {"
MISTAKES = {
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
    "recurrent.gradient_norms": [
        (_detached, (GRAD, "graph between the steps was cut")),
        (lambda *a: gradient_norms(*a).flip(0), (GRAD, "reverse order", "expected:")),
        (lambda *a: gradient_norms_by_hand(*a, slip="no slope"), (GRAD, "1 - h_t**2")),
        (lambda *a: gradient_norms_by_hand(*a, slip="transpose"), (GRAD, "not by its transpose")),
        (lambda *a: gradient_norms_by_hand(*a, slip="pre"), (GRAD, "pre-activations")),
        (
            _with_states(lambda states, h, xs: torch.autograd.grad(h.sum(), xs)[0].norm(dim=(0, 2))),
            (GRAD, "inputs x_t"),
        ),
        (lambda *a: gradient_norms(*a) / gradient_norms(*a)[-1], (GRAD, "not divided by the last")),
        (
            _with_states(lambda states, h, xs: torch.stack([g.norm() for g in torch.autograd.grad(h.mean(), states)])),
            (GRAD, "h_T.mean()"),
        ),
        (lambda *a: gradient_norms(*a) ** 2, (GRAD, "not its square")),
        (_no_retain_grad, (GRAD, "retain_grad")),
        (_no_graph, (GRAD, "requires_grad=True")),
        (lambda *a: gradient_norms(*a)[:-1], (GRAD, "one number per step")),
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
    "recurrent.remember_16": [
        # an RNN with short gaps mixed in: it learns part of the task, never all of it (not
        # chapter 4's RNN as trained there, which a lucky seed can pass)
        (
            lambda: {"cell": "rnn", "lr": 3e-3, "forget_bias": 0.0, "shortest_distance": 6},
            (RECALL, "seed 0: ", "cell='lstm'"),
        ),
        # chapter 4's LSTM, as it was trained there
        (
            lambda: {"cell": "lstm", "lr": 3e-3, "forget_bias": 0.0, "shortest_distance": 16},
            (RECALL, "at least 90%", "forget gate open"),
        ),
        (lambda: {"cell": "lstm", "lr": 1e-4, "forget_bias": 2.0, "shortest_distance": 6}, (RECALL, "too small")),
        (lambda: {"cell": "rnn", "lr": 3e-3, "forget_bias": 1.0, "shortest_distance": 6}, "no forget gate"),
        (lambda: {"cell": "gru", "lr": 3e-3, "forget_bias": 0.0, "shortest_distance": 6}, "'rnn' or 'lstm'"),
        (lambda: {"cell": "lstm", "lr": 3e-3, "forget_bias": 0.0, "shortest_distance": 2}, "from 6"),
        (lambda: {"cell": "lstm", "lr": 3e-3}, "exactly the keys"),
    ],
}


def test_the_reference_settings_remember_on_seeds_0_to_2_with_a_margin() -> None:
    from llmbook.exercises.checks.ch04_recurrent import RECALL_TARGET, recall_accuracy

    threads = torch.get_num_threads()
    accuracies = [recall_accuracy(recall_settings(), seed) for seed in (0, 1, 2)]
    assert min(accuracies) >= RECALL_TARGET + 0.05, accuracies
    assert torch.get_num_threads() == threads  # the caller's thread count is restored
