"""Checks for chapter 4, "Before transformers: next-word prediction and the limits of RNNs".

Five exercises: one step of an Elman RNN and one step of an LSTM, in PyTorch's weight
layout (compared with ``nn.RNNCell`` and ``nn.LSTMCell`` loaded with the same weights);
the norms of the gradient that reaches each hidden state through the learner's own RNN
step (compared with autograd); the number of parameters of PyTorch's recurrent layers;
and an experiment: settings (cell, learning rate, forget-gate bias, training distances)
with which a recurrent model, trained by the check, remembers a name 16 tokens back.
When an answer differs, the feedback names the input, shows expected and actual values,
and recognises the usual mistakes (a missing tanh, transposed weights, a forgotten
bias, the gates in the wrong order, a cut graph, ...) by computing each mistake's
result and comparing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from llmbook.exercises.compare import (
    head,
    known_mistake,
    one_thread,
    same,
    tensor_answer,
    tensor_tuple,
    whole_number,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "04"

_TRANSPOSE = (
    "PyTorch stores a weight as (out_features, in_features), so a layer computes "
    "x @ weight.T + bias. Print the shapes of your tensors."
)
SHAPE_HINTS = [("cannot be multiplied", _TRANSPOSE), ("size of tensor", _TRANSPOSE)]
"""The errors that matrix code with transposed weights raises, and what to do about them."""


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


def _rnn_mistakes(
    x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> list[tuple[torch.Tensor, str]]:
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    mistakes = [
        (pre, "you forgot the tanh: h_new = tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)."),
        (torch.sigmoid(pre), "an Elman RNN in PyTorch uses tanh, not the sigmoid."),
        (torch.relu(pre), "nn.RNN's default nonlinearity is tanh, not ReLU."),
        (torch.tanh(x @ w_ih.T + h @ w_hh.T + b_ih), "you left out bias_hh."),
        (torch.tanh(x @ w_ih.T + h @ w_hh.T + b_hh), "you left out bias_ih."),
        (torch.tanh(x @ w_ih.T + h @ w_hh.T), "you left out both biases."),
        (
            torch.tanh(x @ w_ih.T + b_ih + b_hh),
            ("the previous hidden state h must enter too: add h @ weight_hh.T. Without it the network has no memory."),
        ),
        (torch.tanh(x @ w_ih.T + b_ih + b_hh + h), "h enters through its weights: h @ weight_hh.T, not h itself."),
    ]
    if w_ih.shape[0] == w_ih.shape[1]:
        mistakes += [
            (
                torch.tanh(x @ w_ih + b_ih + h @ w_hh + b_hh),
                "the weights are (out_features, in_features): multiply by their transpose, x @ weight_ih.T.",
            ),
            (
                torch.tanh(x @ w_hh.T + b_ih + h @ w_ih.T + b_hh),
                "weight_ih multiplies the input x and weight_hh the hidden state h; you swapped them.",
            ),
        ]
    return mistakes


@register("recurrent.rnn_step", chapter=CHAPTER, kind="build", title="One step of an Elman RNN")
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
        label = (
            f"rnn_step(x {(b, d_in)}, h {(b, d_h)}, weight_ih {(d_h, d_in)}, weight_hh "
            f"{(d_h, d_h)}, bias_ih {(d_h,)}, bias_hh {(d_h,)})"
        )
        with torch.no_grad():
            got = call(fn, *[a.clone() for a in args], label=label, hints=SHAPE_HINTS)
        got = tensor_answer(
            got,
            label,
            shape=(b, d_h),
            expected=head(expected),
            hint="return the new hidden state, a tensor.",
            shape_hint="one hidden vector of hidden_size numbers per sequence in the batch.",
        )
        if not same(got, expected):
            hint = known_mistake(got, _rnn_mistakes(*args)) or (
                "h_new = tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)."
            )
            raise mismatch(
                f"{label} does not match nn.RNNCell with the same weights (first numbers shown).",
                head(expected),
                head(got),
                hint,
            )
    return "Your step matches torch.nn.RNNCell on 4 shapes: tanh of both weighted inputs and both biases."


# --------------------------------------------------------------------------- gradient decay


def _rnn_states(
    xs: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    linear: bool = False,
) -> list[torch.Tensor]:
    """h_1 .. h_T of an Elman RNN over xs (B, T, d_in), from h_0 = 0, as a graph."""
    h = xs.new_zeros(xs.shape[0], w_hh.shape[0], requires_grad=True)
    states = []
    for t in range(xs.shape[1]):
        pre = xs[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        h = pre if linear else torch.tanh(pre)
        states.append(h)
    return states


def reference_gradient_norms(
    xs: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """||dL/dh_t|| for t = 1 .. T, with L = h_T.sum(), by autograd."""
    with torch.enable_grad():
        states = _rnn_states(xs, w_ih, w_hh, b_ih, b_hh)
        grads = torch.autograd.grad(states[-1].sum(), states)
    return torch.stack([g.norm() for g in grads]).detach()


def _backward_by_hand(
    xs: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    *,
    tanh_slope: bool = True,
    transpose: bool = False,
    pre_activation: bool = False,
) -> torch.Tensor:
    """The backward pass written out, with one of the usual slips built in."""
    with torch.no_grad():
        states = [s.detach() for s in _rnn_states(xs, w_ih, w_hh, b_ih, b_hh)]
        g, norms = torch.ones_like(states[-1]), []
        for h in reversed(states):
            through = g * (1 - h**2) if tanh_slope else g
            norms.append((through if pre_activation else g).norm())
            g = through @ (w_hh.T if transpose else w_hh)
    return torch.stack(norms[::-1])


def _input_gradient_norms(
    xs: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    with torch.enable_grad():
        leaf = xs.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(_rnn_states(leaf, w_ih, w_hh, b_ih, b_hh)[-1].sum(), leaf)
    return grad.norm(dim=(0, 2))


def _gradient_mistakes(*args: torch.Tensor) -> list[tuple[Any, str]]:
    ref = reference_gradient_norms(*args)
    size = args[0].shape[0] * args[2].shape[0]
    cut = torch.zeros_like(ref)
    cut[-1] = ref[-1]
    return [
        (
            cut,
            (
                "only the last state gets a gradient, so the graph between the steps was cut: "
                "do not detach h (no h.detach(), h.data or torch.no_grad()) inside the loop."
            ),
        ),
        (
            ref.flip(0),
            (
                "the norms are in reverse order: entry t - 1 belongs to h_t, so the "
                "first entry (h_1, furthest from the loss) is the smallest."
            ),
        ),
        (
            lambda *a: _backward_by_hand(*a, tanh_slope=False),
            (
                "the tanh is missing from the backward pass (or from your step): going back "
                "through h_t = tanh(a_t) multiplies the gradient by 1 - h_t**2 before W_hh."
            ),
        ),
        (
            lambda *a: _input_gradient_norms(*a),
            (
                "these are the gradients with respect to the inputs x_t; the exercise asks for "
                "the hidden states h_t (keep each h in a list and differentiate with respect "
                "to those)."
            ),
        ),
        (
            lambda *a: _backward_by_hand(*a, pre_activation=True),
            (
                "these are the gradients with respect to the pre-activations a_t (inside the "
                "tanh); take the norm of dL/dh_t, before multiplying by 1 - h_t**2."
            ),
        ),
        (
            lambda *a: _backward_by_hand(*a, transpose=True),
            (
                "going back through h @ weight_hh.T multiplies the gradient by weight_hh itself "
                "(g @ weight_hh), not by its transpose."
            ),
        ),
        (
            ref / ref[-1],
            (
                "return the norms themselves, not divided by the last one "
                "(the chapter plots that ratio; here we want the raw norms)."
            ),
        ),
        (ref / size, ("the loss is h_T.sum(), not h_T.mean(): a mean divides every gradient by B * hidden_size.")),
        (ref**2, "return the norm, g.norm(), not its square."),
    ]


_GRAD_HINTS = [
    (
        "'NoneType'",
        (
            "an intermediate tensor keeps no .grad unless you call h.retain_grad() "
            "before backward(); or use torch.autograd.grad(loss, states), which "
            "returns one gradient per state."
        ),
    ),
    (
        "does not require grad",
        (
            "nothing was recorded for autograd: the inputs of the check "
            "do not require gradients, so start from h_0 = "
            "torch.zeros(B, hidden_size, requires_grad=True)."
        ),
    ),
] + SHAPE_HINTS


@register(
    "recurrent.gradient_norms", chapter=CHAPTER, kind="build", title="How the gradient fades through your RNN step"
)
def check_gradient_norms(fn: Callable[..., Any]) -> str:
    """Compared with autograd through an Elman RNN, for small, ordinary and large weights."""
    gen = torch.Generator().manual_seed(44)
    cases = [(1, 6, 3, 4, 0.5), (2, 12, 5, 8, 0.3), (3, 10, 4, 6, 1.5), (2, 1, 2, 3, 0.5), (4, 20, 8, 16, 0.25)]
    decay = ""
    for b, t, d_in, d_h, scale in cases:
        xs = torch.randn(b, t, d_in, generator=gen)
        w_ih = torch.randn(d_h, d_in, generator=gen) * 0.5
        w_hh = torch.randn(d_h, d_h, generator=gen) * scale
        b_ih, b_hh = torch.randn(d_h, generator=gen) * 0.2, torch.randn(d_h, generator=gen) * 0.2
        args = (xs, w_ih, w_hh, b_ih, b_hh)
        expected = reference_gradient_norms(*args)
        label = (
            f"gradient_norms(xs {(b, t, d_in)}, weight_ih {(d_h, d_in)}, weight_hh "
            f"{(d_h, d_h)} (entries about ±{scale}), bias_ih {(d_h,)}, bias_hh {(d_h,)})"
        )
        got = call(fn, *[a.clone() for a in args], label=label, hints=_GRAD_HINTS)
        got = tensor_answer(
            got,
            label,
            shape=(t,),
            expected=head(expected, 8),
            hint="return torch.stack of the T norms.",
            shape_hint="one number per step: the norm of dL/dh_t for t = 1 .. T.",
        )
        if not same(got.detach(), expected, rtol=1e-3, atol=1e-12):
            hint = known_mistake(got.detach(), _gradient_mistakes(*args), *args, rtol=1e-3, atol=1e-12) or (
                "run the RNN from h_0 = 0 keeping every h_t, set L = h_T.sum(), and return "
                "the norm of dL/dh_t for each t (torch.autograd.grad(L, states))."
            )
            raise mismatch(
                f"{label} does not match autograd (all {t} norms, rounded).",
                [float(f"{v:.4g}") for v in expected.tolist()],
                [float(f"{v:.4g}") for v in got.detach().tolist()],
                hint,
            )
        if t >= 12:
            decay = (
                f"with weight_hh entries about ±{scale}, the gradient reaching h_1 is "
                f"{float(expected[0] / expected[-1]):.1e} of the one at h_{t}"
            )
    return (
        f"Your norms match autograd on {len(cases)} RNNs, from 1 to 20 steps; {decay}: "
        f"the decay the chapter measured, now through your own step."
    )


# --------------------------------------------------------------------------- LSTM step


def reference_lstm_step(
    x, h, c, w_ih, w_hh, b_ih, b_hh, order=(0, 1, 2, 3), h_tanh=True, use_input=True, g_act=torch.tanh
):
    """One LSTM step, optionally with one of the usual mistakes built in."""
    chunks = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    i, f, g, o = (chunks[k] for k in order)
    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), g_act(g)
    c_new = f * c + (i * g if use_input else g)
    h_new = o * (torch.tanh(c_new) if h_tanh else c_new)
    return h_new, c_new


_LSTM_MISTAKES: list[tuple[dict[str, Any], str]] = [
    (
        {"order": (0, 1, 3, 2)},
        (
            "the gates are in the wrong order: PyTorch packs them as input, forget, "
            "candidate (g), output; you used i, f, o, g."
        ),
    ),
    ({"order": (1, 0, 2, 3)}, "input and forget gates are swapped: the order is i, f, g, o."),
    ({"order": (0, 2, 1, 3)}, "forget gate and candidate are swapped: the order is i, f, g, o."),
    ({"order": (3, 1, 2, 0)}, "input and output gates are swapped: the order is i, f, g, o."),
    ({"h_tanh": False}, "the new hidden state is o * tanh(c_new), not o * c_new."),
    ({"use_input": False}, "the candidate must pass through the input gate: c_new = f * c + i * g."),
    ({"g_act": torch.sigmoid}, "the candidate g uses tanh (values in -1..1); only the gates i, f, o use the sigmoid."),
]


@register("recurrent.lstm_step", chapter=CHAPTER, kind="build", title="One step of an LSTM, with its gates")
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
            for p, value in zip(
                (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh), (w_ih, w_hh, b_ih, b_hh), strict=True
            ):
                p.copy_(value)
            expected_h, expected_c = cell(x, (h, c))
        args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
        label = (
            f"lstm_step(x {(b, d_in)}, h {(b, d_h)}, c {(b, d_h)}, weight_ih {(4 * d_h, d_in)}, "
            f"weight_hh {(4 * d_h, d_h)}, bias_ih {(4 * d_h,)}, bias_hh {(4 * d_h,)})"
        )
        with torch.no_grad():
            got = call(fn, *[a.clone() for a in args], label=label, hints=SHAPE_HINTS)
        got_h, got_c = tensor_tuple(got, label, ("h_new", "c_new"), expected=(head(expected_h), head(expected_c)))
        for name, value in (("h_new", got_h), ("c_new", got_c)):
            if tuple(value.shape) != (b, d_h):
                raise CheckFailed(f"{label}: {name} should be a tensor of shape {(b, d_h)}, got {describe(value)}.")
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
            raise mismatch(
                f"{label}: {which} does not match nn.LSTMCell with the same weights (first numbers shown).",
                head(exp),
                head(val),
                hint,
            )
    return (
        "Your LSTM step matches torch.nn.LSTMCell on 4 shapes: gates in PyTorch's order "
        "i, f, g, o, c_new = f*c + i*g, h_new = o*tanh(c_new)."
    )


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
        (
            right - gates * h * layers,
            (
                "PyTorch gives every layer two bias vectors, bias_ih and bias_hh "
                "(redundant, but that is how it is stored); count both."
            ),
        ),
        (right - 2 * gates * h * layers, "count the biases too: bias_ih and bias_hh, hidden_size each per gate."),
        (
            reference_parameter_count(d_in, h, layers, "rnn"),
            "an LSTM has four gates (i, f, g, o), each with its own weights and biases: 4x an RNN's.",
        ),
        (
            first_only,
            (
                "layers after the first read the hidden state of the layer below, so their "
                "input size is hidden_size, not input_size."
            ),
        ),
        (
            right - gates * h * h * layers,
            "each layer also has the hidden-to-hidden matrix weight_hh (hidden_size x hidden_size).",
        ),
        (reference_parameter_count(d_in, h, 1, cell), "count every layer: num_layers of them."),
    ]


@register(
    "recurrent.parameter_count", chapter=CHAPTER, kind="formula", title="Counting the parameters of RNN and LSTM layers"
)
def check_parameter_count(fn: Callable[..., Any]) -> str:
    """Compared with the parameters of real nn.RNN and nn.LSTM modules of several shapes."""
    cases = [
        (10, 20, 1, "rnn"),
        (64, 128, 1, "lstm"),
        (8, 16, 2, "rnn"),
        (32, 64, 3, "lstm"),
        (1, 1, 1, "rnn"),
        (300, 100, 2, "lstm"),
        (16, 16, 1, "lstm"),
    ]
    for d_in, h, layers, cell in cases:
        label = f"parameter_count({d_in}, {h}, num_layers={layers}, cell={cell!r})"
        module = {"rnn": nn.RNN, "lstm": nn.LSTM}[cell](d_in, h, num_layers=layers)
        expected = sum(p.numel() for p in module.parameters())
        assert expected == reference_parameter_count(d_in, h, layers, cell)
        got = whole_number(
            call(fn, d_in, h, layers, cell, label=label, hints=SHAPE_HINTS), label, expected, floats_ok=True
        )
        if got != expected:
            hint = known_mistake(got, _count_mistakes(d_in, h, layers, cell)) or (
                "per layer and gate: hidden_size x (layer input size + hidden_size) weights "
                "plus 2 x hidden_size biases."
            )
            shapes = ", ".join(f"{name} {tuple(p.shape)}" for name, p in list(module.named_parameters())[:4])
            raise mismatch(
                f"{label} is not the number of parameters of torch.nn.{module.__class__.__name__}"
                f"({d_in}, {h}, num_layers={layers}), whose first layer holds {shapes}.",
                expected,
                got,
                hint,
            )
    return (
        "Your counts match torch.nn.RNN and torch.nn.LSTM on 7 shapes (1 to 3 layers), "
        "both biases and all four LSTM gates included."
    )


# --------------------------------------------------------------------------- remember 16 tokens

RECALL_DISTANCE = 16
"""How far back the name is from the answer in every test example."""
RECALL_STEPS = 300
"""Training steps, batches of ``RECALL_BATCH`` examples."""
RECALL_BATCH = 32
RECALL_WIDTH = 64
"""Embedding and hidden size of the recurrent model."""
RECALL_TARGET = 0.9
"""The accuracy that must be reached on 500 new examples, by every seed of ``RECALL_SEEDS``."""
RECALL_SEEDS = (0, 1)
RECALL_SETTINGS = ("cell", "lr", "forget_bias", "shortest_distance")
_RECALL_EXAMPLE = "{'cell': 'rnn', 'lr': 3e-3, 'forget_bias': 0.0, 'shortest_distance': 16}"


def recall_task() -> Any:
    """Chapter 4's recall task with four names, sequences just long enough for distance 16."""
    from llmbook.tasks import NAMES, RecallTask

    return RecallTask(max_distance=RECALL_DISTANCE, names=NAMES[:4])


class _RecallModel(nn.Module):
    """Embeddings, one nn.RNN or nn.LSTM layer, and scores for the token after the last."""

    def __init__(self, vocab_size: int, cell: str, forget_bias: float) -> None:
        super().__init__()
        d = RECALL_WIDTH
        self.emb = nn.Embedding(vocab_size, d)
        self.rnn = nn.LSTM(d, d, batch_first=True) if cell == "lstm" else nn.RNN(d, d, batch_first=True)
        if cell == "lstm":  # the forget gate is the second quarter of each bias
            with torch.no_grad():
                self.rnn.get_parameter("bias_ih_l0")[d : 2 * d] = forget_bias
                self.rnn.get_parameter("bias_hh_l0")[d : 2 * d] = 0.0
        self.out = nn.Linear(d, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(self.emb(tokens))
        return self.out(states[:, -1])


def recall_settings(value: Any, label: str = "recall_settings()") -> dict[str, Any]:
    """The learner's settings, validated: a dict with exactly the keys RECALL_SETTINGS."""
    if not isinstance(value, dict) or sorted(value) != sorted(RECALL_SETTINGS):
        raise CheckFailed(
            f"{label} should return a dict with exactly the keys {list(RECALL_SETTINGS)}, "
            f"but returned {describe(value)}.\nHint: for example {_RECALL_EXAMPLE}."
        )
    cell, lr, bias, shortest = (value[k] for k in RECALL_SETTINGS)
    task = recall_task()
    if cell not in ("rnn", "lstm"):
        raise CheckFailed(f"{label}: cell = {cell!r} should be 'rnn' or 'lstm'.")
    real = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lr, bias)]
    if not (real[0] and 1e-5 <= lr <= 0.1):
        raise CheckFailed(
            f"{label}: lr = {lr!r} should be a number from 1e-5 to 0.1.\n"
            f"Hint: AdamW's learning rates are usually 1e-4 to 1e-2."
        )
    if not (real[1] and -5 <= bias <= 5):
        raise CheckFailed(f"{label}: forget_bias = {bias!r} should be a number from -5 to 5.")
    if cell == "rnn" and bias != 0:
        raise CheckFailed(
            f"{label}: forget_bias = {bias!r}, but an RNN has no forget gate; set it to 0, or use cell='lstm'."
        )
    if not (
        isinstance(shortest, int)
        and not isinstance(shortest, bool)
        and task.min_distance <= shortest <= RECALL_DISTANCE
    ):
        raise CheckFailed(
            f"{label}: shortest_distance = {shortest!r} should be a whole number from "
            f"{task.min_distance} (the name right before the question) to "
            f"{RECALL_DISTANCE}."
        )
    return dict(value)


def recall_accuracy(settings: dict[str, Any], seed: int = 0) -> float:
    """Train chapter 4's recurrent model on the recall task with these settings and return
    its accuracy on 500 new examples at distance 16.

    ``settings``: ``cell`` ('rnn' or 'lstm'), ``lr`` (AdamW's learning rate),
    ``forget_bias`` (the LSTM forget gate's starting bias) and ``shortest_distance`` (each
    training example's distance is drawn uniformly from it to 16). The model has width 64
    and trains for 300 steps of 32 examples; ``seed`` fixes its weights and its data. This
    is exactly what the check of exercise 5 runs, for seeds 0 and 1.
    """
    s = recall_settings(settings, "recall_accuracy(settings)")
    task = recall_task()
    length = RECALL_DISTANCE + task.name_offset
    with one_thread():  # the same numbers on every machine
        torch.manual_seed(seed)
        model = _RecallModel(task.vocab_size, s["cell"], float(s["forget_bias"]))
        opt = torch.optim.AdamW(model.parameters(), lr=float(s["lr"]), weight_decay=0.0)
        gen = torch.Generator().manual_seed(seed)
        with torch.enable_grad():
            for _ in range(RECALL_STEPS):
                distances = torch.randint(s["shortest_distance"], RECALL_DISTANCE + 1, (RECALL_BATCH,), generator=gen)
                batch = task.sample(RECALL_BATCH, distances, gen, length=length)
                loss = nn.functional.cross_entropy(model(batch.tokens), batch.answers)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        test = task.sample(500, RECALL_DISTANCE, torch.Generator().manual_seed(10_016), length=length)
        with torch.no_grad():
            return task.accuracy(model.eval()(test.tokens), test.answers)


def _recall_hint(s: dict[str, Any], accuracies: list[float]) -> str:
    if s["cell"] == "rnn":
        return (
            "a plain RNN multiplies the gradient by weight_hh and the tanh's slope at "
            "every step (exercise 2), so little reaches a name 16 tokens back. Use "
            "cell='lstm': its cell c can carry the name unchanged while f stays near 1."
        )
    if s["lr"] < 1e-3:
        return f"lr = {s['lr']:g} is too small for {RECALL_STEPS} steps; try 3e-3 to 1e-2."
    if s["lr"] > 3e-2:
        return f"lr = {s['lr']:g} is so large that training is unstable; try 3e-3 to 1e-2."
    if s["forget_bias"] <= 0:
        return (
            "start with the forget gate open: forget_bias = 1 to 2 makes f = σ(1 to 2) "
            "= 0.73 to 0.88 from the first step, so the cell keeps the name across the "
            "gap while the other weights learn (Jozefowicz et al., 2015). Training on "
            "shorter gaps as well (shortest_distance=6) helps too."
        )
    if s["shortest_distance"] >= 12:
        return (
            f"every training example is {s['shortest_distance']} or more tokens long, so "
            f"at the start almost no learning signal reaches the name and the model "
            f"never finds it (chance is 25%). Mix in short gaps, e.g. "
            f"shortest_distance=6: what the model learns at 6 tokens carries over to 16."
        )
    return "try shortest_distance=6 with forget_bias between 1 and 2, and a learning rate between 3e-3 and 1e-2."


@register(
    "recurrent.remember_16",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="Make a recurrent model remember across 16 tokens",
)
def check_remember_16(fn: Any) -> str:
    """Train with the learner's settings (seeds 0 and 1) and measure recall at distance 16."""
    label = "recall_settings()"
    settings = recall_settings(call(fn, label=label), label)
    shown = ", ".join(f"{k}={settings[k]!r}" for k in RECALL_SETTINGS)
    accuracies = [recall_accuracy(settings, seed) for seed in RECALL_SEEDS]
    got = ", ".join(f"seed {seed}: {a:.0%}" for seed, a in zip(RECALL_SEEDS, accuracies, strict=True))
    if min(accuracies) >= RECALL_TARGET:
        return (
            f"{{{shown}}}: after {RECALL_STEPS} steps the model names the right person "
            f"16 tokens back ({got}; chance 25%), where chapter 4's LSTM, trained on "
            f"distance 16 alone from PyTorch's default start, stays near chance."
        )
    raise CheckFailed(
        f"{label} = {{{shown}}} does not remember across {RECALL_DISTANCE} tokens after "
        f"{RECALL_STEPS} steps.\n  expected: at least {RECALL_TARGET:.0%} on 500 new examples "
        f"for seeds {RECALL_SEEDS}\n  got:      {got}\n"
        f"Hint: {_recall_hint(settings, accuracies)}"
    )
