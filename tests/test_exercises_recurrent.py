"""Chapter 4's checks: right answers pass, the usual wrong answers fail with the right hint."""

from __future__ import annotations

import pytest
import torch

from llmbook.exercises import check, checks_for_chapter


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


def test_chapter_4_has_four_checks_in_exercise_order() -> None:
    names = [c.name for c in checks_for_chapter("04")]
    assert names == ["recurrent.window_pairs", "recurrent.rnn_step", "recurrent.lstm_step",
                     "recurrent.parameter_count"]


@pytest.mark.parametrize("name, answer", [
    ("recurrent.window_pairs", window_pairs),
    ("recurrent.window_pairs", window_pairs_unfold),
    ("recurrent.rnn_step", rnn_step),
    ("recurrent.rnn_step", lambda x, h, wi, wh, bi, bh: torch.nn.functional.linear(x, wi, bi + bh)
     .add(h @ wh.T).tanh()),
    ("recurrent.lstm_step", lstm_step),
    ("recurrent.lstm_step", lambda *a: list(lstm_step(*a))),
    ("recurrent.parameter_count", parameter_count),
    ("recurrent.parameter_count", lambda *a: float(parameter_count(*a))),
])
def test_correct_answers_pass(name, answer) -> None:
    result = check(name, answer)
    assert result.passed, result.feedback


def _contexts(ids, n, count_extra=0):
    count = len(ids) - n + count_extra
    return torch.stack([ids[i : i + n] for i in range(count)]) if count > 0 else ids.new_empty(0, n)


@pytest.mark.parametrize("answer, hint", [
    (lambda ids, n: (_contexts(ids, n), ids[n - 1 : -1]), "last word of its own context"),
    (lambda ids, n: (_contexts(ids, n, 1), ids[n:]), "one context too many"),
    (lambda ids, n: (_contexts(ids, n).flip(1), ids[n:]), "reversed"),
    (lambda ids, n: (_contexts(ids, n).T, ids[n:]), "transposed"),
    (lambda ids, n: (_contexts(ids, n).float(), ids[n:].float()), "torch.long"),
    (lambda ids, n: ([ids[i : i + n].tolist() for i in range(len(ids) - n)], ids[n:].tolist()), "torch tensors"),
    (lambda ids, n: _contexts(ids, n), "two tensors"),
])
def test_window_pairs_mistakes(answer, hint) -> None:
    result = check("recurrent.window_pairs", answer)
    assert not result.passed and hint in result.feedback, result.feedback
    assert "window_pairs(torch.tensor(" in result.feedback      # names the input


def test_window_pairs_with_no_pairs() -> None:
    def no_edge_case(ids, n):
        return torch.stack([ids[i : i + n] for i in range(max(len(ids) - n, 1))]), ids[n:]

    result = check("recurrent.window_pairs", no_edge_case)
    assert not result.passed and "no pairs" in result.feedback, result.feedback


@pytest.mark.parametrize("answer, hint", [
    (lambda x, h, wi, wh, bi, bh: x @ wi.T + bi + h @ wh.T + bh, "forgot the tanh"),
    (lambda x, h, wi, wh, bi, bh: torch.sigmoid(x @ wi.T + bi + h @ wh.T + bh), "not the sigmoid"),
    (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi.T + bi + h @ wh.T), "left out bias_hh"),
    (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi.T + h @ wh.T), "both biases"),
    (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi.T + bi + bh), "no memory"),
    (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi + bi + h @ wh + bh), "weight.T"),
    (lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wi.T + bi + h @ wh.T + bh)[:1], "shape"),
    (lambda x, h, wi, wh, bi, bh: None, "a tensor"),
])
def test_rnn_step_mistakes(answer, hint) -> None:
    result = check("recurrent.rnn_step", answer)
    assert not result.passed and hint in result.feedback, result.feedback
    assert "rnn_step(x (" in result.feedback


def test_rnn_step_swapped_weights_found_on_square_shapes() -> None:
    result = check("recurrent.rnn_step", lambda x, h, wi, wh, bi, bh: torch.tanh(x @ wh.T + bi + h @ wi.T + bh)
                   if wi.shape[0] == wi.shape[1] else rnn_step(x, h, wi, wh, bi, bh))
    assert not result.passed and "swapped" in result.feedback, result.feedback


@pytest.mark.parametrize("mistake, hint", [
    ({"order": (0, 1, 3, 2)}, "wrong order"),
    ({"order": (1, 0, 2, 3)}, "input and forget gates are swapped"),
    ({"h_tanh": False}, "o * tanh(c_new)"),
    ({"use_input": False}, "input gate"),
])
def test_lstm_step_mistakes(mistake, hint) -> None:
    result = check("recurrent.lstm_step", lambda *a: lstm_step(*a, **mistake))
    assert not result.passed and hint in result.feedback, result.feedback
    assert "lstm_step(x (" in result.feedback


def test_lstm_step_other_mistakes() -> None:
    swapped = check("recurrent.lstm_step", lambda *a: lstm_step(*a)[::-1])
    assert not swapped.passed and "(h_new, c_new), in that order" in swapped.feedback

    def sigmoid_candidate(x, h, c, wi, wh, bi, bh):
        i, f, g, o = torch.sigmoid(x @ wi.T + bi + h @ wh.T + bh).chunk(4, dim=-1)
        c_new = f * c + i * g
        return o * torch.tanh(c_new), c_new

    result = check("recurrent.lstm_step", sigmoid_candidate)
    assert not result.passed and "candidate g uses tanh" in result.feedback, result.feedback

    only_h = check("recurrent.lstm_step", lambda *a: lstm_step(*a)[0])
    assert not only_h.passed and "two tensors" in only_h.feedback


@pytest.mark.parametrize("answer, hint", [
    (lambda d, h, n=1, cell="rnn": parameter_count(d, h, n, cell) - {"rnn": 1, "lstm": 4}[cell] * h * n,
     "two bias vectors"),
    (lambda d, h, n=1, cell="rnn": parameter_count(d, h, n, "rnn"), "four gates"),
    (lambda d, h, n=1, cell="rnn": parameter_count(d, h, 1, cell) * n, "input size is hidden_size"),
    (lambda d, h, n=1, cell="rnn": parameter_count(d, h, 1, cell), "num_layers"),
    (lambda d, h, n=1, cell="rnn": parameter_count(d, h, n, cell) - {"rnn": 1, "lstm": 4}[cell] * h * h * n,
     "weight_hh"),
    (lambda d, h, n=1, cell="rnn": "many", "whole number"),
])
def test_parameter_count_mistakes(answer, hint) -> None:
    result = check("recurrent.parameter_count", answer)
    assert not result.passed and hint in result.feedback, result.feedback
    assert "parameter_count(" in result.feedback


def test_stubs_and_errors_are_explained() -> None:
    def stub(*args):
        raise NotImplementedError("Write your solution here")

    for name in ("recurrent.window_pairs", "recurrent.rnn_step", "recurrent.lstm_step",
                 "recurrent.parameter_count"):
        result = check(name, stub)
        assert not result.passed and "have not written this yet" in result.feedback

    crash = check("recurrent.rnn_step", lambda x, h, wi, wh, bi, bh: x @ wh + h)
    assert not crash.passed and "x @ weight.T" in crash.feedback, crash.feedback
