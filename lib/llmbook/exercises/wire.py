"""Plain data between the grader and a notebook's kernel: tensors, numbers, text (grading).

The grader never takes a verdict from the kernel that runs a learner's notebook; it only
sends the learner's functions inputs and reads back what they return (see
``llmbook.exercises.remote``). This module is how those values travel: each message is
a length-prefixed JSON document in which a tensor or NumPy array is its dtype, shape and
raw bytes (base64). Decoding builds only plain values (``None``, bools, numbers, strings,
bytes, lists, tuples, sets, dicts, tensors, NumPy arrays, CPU random generators, and
the few dataclasses of ``DATACLASSES`` such as ``GPTConfig``): nothing is unpickled and
no code from the other side runs, so a kernel can lie about what a function returned
but can never hand the grader an object that behaves.

A value of any other kind (a class, a module, a model) travels as an ``Opaque``
stand-in that shows its type in feedback. A callable that is not a class travels as a
handle, so that ``(split_heads, merge_heads)`` reaches the check as two functions the
grader can call remotely.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import socket
import struct
from collections.abc import Callable
from typing import Any

import torch

MAX_MESSAGE = 64 * 2**20
"""The largest message either side accepts (bytes): a kernel cannot exhaust the grader's memory."""

_HEADER = struct.Struct("!Q")

DATACLASSES = frozenset({"llmbook.config.GPTConfig"})
MODULES = frozenset({"llmbook.classification.GPTClassifier"})
"""Models that travel as the recipe that builds them and their parameters (values and
``requires_grad``), for the checks that hand the learner a model (``_recipe``/``_build``)."""
"""Dataclasses that travel as their fields and are rebuilt on the other side (only these:
decoding never imports or builds a type the data names unless it is listed here)."""


class WireError(Exception):
    """A message that is too large, cut short or not one this protocol sends."""


class Opaque:
    """What the grader sees in place of a value that is not plain data (a class, a model)."""

    def __init__(self, kind: str, text: str) -> None:
        self.kind, self.text = kind, text

    def __repr__(self) -> str:
        return f"<{self.kind} object {self.text}>"


# --------------------------------------------------------------------------- framing


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one message (a JSON object) with its length in front."""
    data = json.dumps(message, ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise WireError(f"a message of {len(data)} bytes is over the limit of {MAX_MESSAGE}")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 2**20))
        if not chunk:
            raise WireError("the connection closed in the middle of a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket) -> dict[str, Any]:
    """Receive one message; ``WireError`` for anything malformed, ``OSError`` for a socket
    that failed or timed out."""
    (size,) = _HEADER.unpack(_exactly(sock, _HEADER.size))
    if size > MAX_MESSAGE:
        raise WireError(f"a message of {size} bytes is over the limit of {MAX_MESSAGE}")
    try:
        message = json.loads(_exactly(sock, size).decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise WireError(f"a message that is not JSON ({err})") from None
    if not isinstance(message, dict):
        raise WireError("a message that is not a JSON object")
    return message


# --------------------------------------------------------------------------- values


def _tensor_bytes(t: torch.Tensor) -> str:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return base64.b64encode(flat.view(torch.uint8).numpy().tobytes()).decode("ascii")


def encode(value: Any, handle: Callable[[Any], int] | None = None, depth: int = 0) -> Any:
    """``value`` as JSON-ready data. ``handle`` numbers a callable so that the other side
    can call it; without it a callable is ``Opaque``."""
    if depth > 50:
        return {"$": "opaque", "kind": "nested", "text": "(nested too deeply)"}
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value).__module__ == "numpy":
        return _encode_numpy(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return {"$": "float", "v": repr(float(value))}  # keeps nan, inf and every bit
    if isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_quantized:
        return {"$": "tensor", "dtype": str(value.dtype).removeprefix("torch."),
                "shape": list(value.shape), "grad": bool(value.requires_grad),
                "data": _tensor_bytes(value)}
    if isinstance(value, torch.Generator) and value.device.type == "cpu":
        return {"$": "generator", "state": _tensor_bytes(value.get_state())}
    if isinstance(value, bytes):
        return {"$": "bytes", "data": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple, set, frozenset)):
        kind = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}.get(
            type(value), "tuple" if isinstance(value, tuple) else "list")
        if _plain(value):  # a long list of token ids or of texts, as JSON has it
            return {"$": kind, "plain": list(value)}
        return {"$": kind, "items": [encode(v, handle, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"$": "dict", "items": [[encode(k, handle, depth + 1), encode(v, handle, depth + 1)]
                                       for k, v in value.items()]}
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    if name in DATACLASSES and dataclasses.is_dataclass(value):
        return {"$": "dataclass", "type": name, "fields": {
            f.name: encode(getattr(value, f.name), handle, depth + 1) for f in dataclasses.fields(value)}}
    if name in MODULES and isinstance(value, torch.nn.Module):
        return {"$": "module", "type": name, "recipe": encode(_recipe(value), None, depth + 1),
                "params": {n: encode(p, None, depth + 1) for n, p in value.named_parameters()}}
    if callable(value) and not isinstance(value, type) and handle is not None:
        return {"$": "function", "id": handle(value), "name": getattr(value, "__name__", "function")}
    return {"$": "opaque", "kind": type(value).__name__, "text": _short_repr(value)}


def _plain(items: Any) -> bool:
    """Only whole numbers (not bools), or only texts: JSON carries these as they are."""
    return all(type(v) is int for v in items) or all(type(v) is str for v in items)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a repr that fails says nothing more
        text = "?"
    return text if len(text) <= 120 else text[:117] + "..."


def _encode_numpy(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        return {"$": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape),
                "data": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")}
    if isinstance(value, np.generic) and value.dtype.kind in "biufc":
        return {"$": "npscalar", "dtype": value.dtype.str, "v": repr(value.item())}
    return {"$": "opaque", "kind": type(value).__name__, "text": _short_repr(value)}


def decode(data: Any, function: Callable[[int, str], Any] | None = None) -> Any:
    """The value ``encode`` wrote, built from plain types only. ``function`` turns a
    handle into something callable; without it a handle is ``Opaque``. Raises
    ``WireError`` for data this module never writes."""
    try:
        return _decode(data, function)
    except WireError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, RecursionError) as err:
        raise WireError(f"a value that cannot be read ({type(err).__name__}: {err})") from None


def _decode(data: Any, function: Callable[[int, str], Any] | None) -> Any:
    if data is None or isinstance(data, (bool, int, str)):
        return data
    if isinstance(data, float):
        return data
    if not isinstance(data, dict):
        raise WireError(f"unexpected {type(data).__name__} in a value")
    kind = data.get("$")
    if kind == "float":
        return float(str(data["v"]))
    if kind == "tensor":
        return _decode_tensor(data)
    if kind == "generator":
        state = torch.frombuffer(bytearray(base64.b64decode(data["state"])), dtype=torch.uint8)
        return torch.Generator().set_state(state.clone())
    if kind == "bytes":
        return base64.b64decode(data["data"])
    if kind in ("list", "tuple", "set", "frozenset"):
        if "plain" in data:
            items = data["plain"]
            if not (isinstance(items, list) and _plain(items)):
                raise WireError("a plain list holding something other than whole numbers or texts")
        else:
            items = [_decode(v, function) for v in data["items"]]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
    if kind == "dict":
        return {_decode(k, function): _decode(v, function) for k, v in data["items"]}
    if kind == "function":
        if function is None:
            return Opaque("function", str(data.get("name", "")))
        return function(int(data["id"]), str(data.get("name", "function")))
    if kind == "ndarray":
        import numpy as np

        array = np.frombuffer(base64.b64decode(data["data"]), dtype=_numeric(str(data["dtype"])))
        return array.reshape([int(n) for n in data["shape"]]).copy()
    if kind == "npscalar":
        import numpy as np

        return _numeric(str(data["dtype"])).type(_literal(str(data["v"])))
    if kind == "dataclass" and data.get("type") in DATACLASSES:
        module, _, qualname = str(data["type"]).rpartition(".")
        cls = getattr(importlib.import_module(module), qualname)
        return cls(**{str(k): _decode(v, function) for k, v in data["fields"].items()})
    if kind == "module" and data.get("type") in MODULES:
        return _build(str(data["type"]), _decode(data["recipe"], None),
                      {str(n): _decode(v, None) for n, v in data["params"].items()})
    if kind == "opaque":
        return Opaque(str(data.get("kind", "?"))[:100], str(data.get("text", ""))[:200])
    raise WireError(f"unknown kind of value {kind!r}")


def _recipe(model: Any) -> Any:
    """What builds a model of ``MODULES`` again (its parameters aside)."""
    return [model.gpt.config, model.head.out_features]  # GPTClassifier


def _build(name: str, recipe: Any, params: dict[str, Any]) -> torch.nn.Module:
    """A model of ``MODULES`` from its recipe, with these parameters, values and flags."""
    from llmbook.classification import GPTClassifier
    from llmbook.config import GPTConfig
    from llmbook.model import GPT

    config, n_classes = recipe
    if not (isinstance(config, GPTConfig) and isinstance(n_classes, int) and 2 <= n_classes <= 2**16
            and config.n_embd * config.n_layer * config.vocab_size <= 2**28):
        raise WireError(f"not a recipe for a small {name}")
    with torch.random.fork_rng(devices=[]):  # building draws initial values: leave the caller's RNG alone
        model = GPTClassifier(GPT(config), n_classes=n_classes)
    own = dict(model.named_parameters())
    if set(own) != set(params) or not all(
            isinstance(t, torch.Tensor) and t.shape == own[n].shape for n, t in params.items()):
        raise WireError(f"parameters that do not fit a {name}")
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(params[n])
            p.requires_grad_(bool(params[n].requires_grad))
    return model


def _numeric(name: str) -> Any:
    """A NumPy dtype of numbers (never ``object``, which could hold anything)."""
    import numpy as np

    dtype = np.dtype(name)
    if dtype.kind not in "biufc":
        raise WireError(f"not a numeric dtype: {name!r}")
    return dtype


def _literal(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):  # nan and inf are not literals
        return float(text)


def _decode_tensor(data: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, str(data["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise WireError(f"unknown dtype {data['dtype']!r}")
    shape = [int(n) for n in data["shape"]]
    raw = base64.b64decode(data["data"])
    if not raw:
        t = torch.empty(shape, dtype=dtype)
    else:
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
    return t.requires_grad_(True) if data.get("grad") and t.is_floating_point() else t


__all__ = ["MAX_MESSAGE", "Opaque", "WireError", "decode", "encode", "receive", "send"]
