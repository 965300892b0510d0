"""Checks judged in the grader's own process, the learner's functions called remotely (grading).

While the grader runs a notebook, ``SOCKET_ENV`` names a Unix socket that the grader
listens on. When the notebook calls ``check(name, answer)``, the kernel connects and
*serves* the answer (``serve``): the grader runs the very same checker in its own
process, with the answer replaced by stand-ins (``RemoteFunction``) that send their
arguments to the kernel as plain data, have the learner's function called there, and
read back only what it returned (``llmbook.exercises.wire``). The grader compares that
with its reference and keeps the verdict; it sends the verdict back only so the
notebook can print it.

So the kernel never states a verdict: whatever code in the notebook does (print a pass,
write a report file, patch ``check`` or ``llmbook``, connect to the socket itself, kill
its kernel), the only thing it can influence is the values its functions return for the
checker's inputs, and those earn points only when they are right. A function that runs
past the check's time limit (the time spent in the learner's functions, moving the data
left out) is stopped in the kernel (``core.time_limit``) and, failing that, abandoned by
the grader a little later; a kernel that dies fails the check in
progress. In-place changes to an argument are sent back and applied to the grader's
copy, so a check still notices a function that changes its inputs; a result that carries
gradients is joined to the grader's inputs (``_RemoteGraph``), whose backward pass asks the
kernel for them; and a function the checker passes in (a tokenizer's ``encode``) runs in
the grader when the learner's function calls it.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from llmbook.exercises import wire
from llmbook.exercises.core import SOCKET_ENV, Check, CheckResult, CheckTimeout, _run, time_limit

GRACE = 10.0
"""Seconds the grader waits past a call's time limit (for moving the data, or a kernel slow
to stop the function) before it gives up on the kernel."""

HELLO_TIMEOUT = 10.0
"""Seconds a new connection has to say which check it serves."""


# --------------------------------------------------------------------------- in the kernel


def serve(check_: Check, answer: Any, limit: float | None, path: str) -> CheckResult:
    """Serve ``answer`` to the grader listening at ``path`` until it sends its verdict."""
    handles: list[Any] = []
    graphs: list[Any] = []  # (result, inputs) of calls whose result the checker may differentiate

    def handle(fn: Any) -> int:
        handles.append(fn)
        return len(handles) - 1

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            wire.send(sock, {"op": "hello", "name": check_.name,
                             "answer": wire.encode(answer, handle)})
            while True:
                request = wire.receive(sock)
                if request.get("op") == "done":
                    return CheckResult(**request["result"])
                if request.get("op") == "backward":
                    wire.send(sock, _backward(graphs, request))
                else:
                    wire.send(sock, _call(sock, handles, graphs, request, handle))
    except (OSError, wire.WireError, KeyError, TypeError) as err:
        return CheckResult(check_.name, False, 0, check_.points,
                           f"Could not reach the grader ({type(err).__name__}: {err}).", 0.0)


def _callback(sock: socket.socket, fn_id: int, name: str) -> Callable[..., Any]:
    """A function the checker passed in (such as a tokenizer's ``encode``), called back in
    the grader."""

    def callback(*args: Any) -> Any:
        wire.send(sock, {"op": "callback", "id": fn_id, "args": wire.encode(args)})
        reply = wire.receive(sock)
        if "error" in reply:
            raise _exception(reply["error"])
        return wire.decode(reply.get("result"))

    callback.__name__ = name
    return callback


def _call(sock: socket.socket, handles: list[Any], graphs: list[Any], request: dict[str, Any],
          handle: Callable[[Any], int]) -> dict[str, Any]:
    """Call the learner's function a request names; its result, or how it failed."""
    try:
        fn = handles[int(request["id"])]
        args = wire.decode(request["args"], lambda fn_id, name: _callback(sock, fn_id, name))
        seconds = float(request["seconds"])
    except (KeyError, IndexError, TypeError, ValueError, wire.WireError) as err:
        return {"error": {"type": "RuntimeError", "message": f"bad request: {err}"}}
    started = time.perf_counter()
    try:
        with time_limit(seconds):
            result = fn(*args)
    except CheckTimeout:
        return {"timeout": True}
    except KeyboardInterrupt:
        raise
    except Exception as err:  # the learner's error, reported to the checker as it was raised
        return {"error": {"type": type(err).__name__, "message": str(err)}}
    reply = {"result": wire.encode(result, handle), "args": wire.encode(args),
             "elapsed": time.perf_counter() - started}
    if isinstance(result, torch.Tensor) and result.requires_grad:
        inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        graphs.append((result, inputs))
        reply["graph"] = len(graphs) - 1
    return reply


def _backward(graphs: list[Any], request: dict[str, Any]) -> dict[str, Any]:
    """The gradients of a call's result with respect to its inputs that require them."""
    try:
        result, inputs = graphs[int(request["id"])]
        with time_limit(float(request["seconds"])):
            grads = torch.autograd.grad(result, inputs, wire.decode(request["grad"]), allow_unused=True)
        return {"grads": wire.encode(list(grads))}
    except CheckTimeout:
        return {"timeout": True}
    except Exception as err:  # reported to the checker as the learner's error
        return {"error": {"type": type(err).__name__, "message": str(err)}}


# --------------------------------------------------------------------------- in the grader


class _Connection:
    """The grader's end of one served check; broken after a timeout or a bad reply."""

    def __init__(self, sock: socket.socket, limit: float | None) -> None:
        self.sock, self.limit = sock, limit
        self.used = 0.0  # seconds spent in the learner's functions, the checker's time excluded
        self.broken: str | None = None

    def seconds_left(self) -> float:
        return 3600.0 if self.limit is None else self.limit - self.used

    def call(self, fn_id: int, args: tuple[Any, ...]) -> Any:
        if self.broken:
            raise RuntimeError(self.broken)
        left = self.seconds_left()
        if left <= 0:
            raise CheckTimeout()
        callbacks: list[Any] = []

        def handle(fn: Any) -> int:
            callbacks.append(fn)
            return len(callbacks) - 1

        started = time.monotonic()
        try:
            self.sock.settimeout(left + GRACE)
            wire.send(self.sock, {"op": "call", "id": fn_id, "args": wire.encode(args, handle),
                                  "seconds": left})
            reply = wire.receive(self.sock)
            while reply.get("op") == "callback":  # the learner's function calls one of the checker's
                wire.send(self.sock, _call_back(callbacks, reply))
                reply = wire.receive(self.sock)
        except TimeoutError:
            self.broken = "the kernel stopped answering"
            raise CheckTimeout() from None
        except (OSError, wire.WireError) as err:
            self.broken = f"the notebook's kernel stopped answering the grader ({err})"
            raise RuntimeError(self.broken) from None
        # The kernel's own count leaves out the time spent moving data; it may not exceed
        # the time the call took here (a kernel that under-reports only waits on itself).
        wall = time.monotonic() - started
        try:
            self.used += min(max(float(reply.get("elapsed", wall)), 0.0), wall)
        except (TypeError, ValueError):
            self.used += wall
        if reply.get("timeout"):
            raise CheckTimeout()
        if "error" in reply:
            raise _exception(reply["error"])
        try:
            result = wire.decode(reply["result"], self.function)
            _write_back(args, wire.decode(reply.get("args")))
        except (KeyError, wire.WireError) as err:
            raise RuntimeError(f"the function returned a value the grader cannot read ({err})") from None
        inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        if isinstance(result, torch.Tensor) and isinstance(reply.get("graph"), int) and inputs:
            result = _RemoteGraph.apply(self, reply["graph"], result.detach(), *inputs)
        return result

    def backward(self, graph: int, grad: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> list[Any]:
        """The gradients the kernel computes for a call's inputs, checked against their shapes."""
        left = self.seconds_left()
        if self.broken or left <= 0:
            raise RuntimeError(self.broken or "no time left for the backward pass")
        try:
            self.sock.settimeout(left + GRACE)
            wire.send(self.sock, {"op": "backward", "id": graph, "grad": wire.encode(grad),
                                  "seconds": left})
            reply = wire.receive(self.sock)
            if "error" in reply:
                raise _exception(reply["error"])
            grads = wire.decode(reply["grads"])
        except (OSError, KeyError, wire.WireError) as err:
            self.broken = f"the notebook's kernel stopped answering the grader ({err})"
            raise RuntimeError(self.broken) from None
        if not (isinstance(grads, list) and len(grads) == len(inputs) and all(
                g is None or (isinstance(g, torch.Tensor) and g.shape == x.shape)
                for g, x in zip(grads, inputs, strict=True))):
            raise RuntimeError("the kernel sent gradients that do not fit the inputs")
        return [None if g is None else g.to(x.dtype) for g, x in zip(grads, inputs, strict=True)]

    def function(self, fn_id: int, name: str) -> RemoteFunction:
        return RemoteFunction(self, fn_id, name)


def _call_back(callbacks: list[Any], request: dict[str, Any]) -> dict[str, Any]:
    """Run one of the checker's own functions for the kernel (a tokenizer's ``encode``)."""
    try:
        return {"op": "return", "result": wire.encode(
            callbacks[int(request["id"])](*wire.decode(request["args"])))}
    except Exception as err:  # reported to the learner's function as it was raised
        return {"op": "return", "error": {"type": type(err).__name__, "message": str(err)}}


class _RemoteGraph(torch.autograd.Function):
    """A result computed in the kernel, joined to the grader's inputs so that a checker can
    differentiate it: its backward asks the kernel for the gradients."""

    @staticmethod
    def forward(ctx: Any, connection: _Connection, graph: int, result: torch.Tensor,
                *inputs: torch.Tensor) -> torch.Tensor:
        ctx.connection, ctx.graph, ctx.inputs = connection, graph, inputs
        return result.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return (None, None, None, *ctx.connection.backward(ctx.graph, grad, ctx.inputs))


class RemoteFunction:
    """A learner's function as the grader's checker sees it: calling it calls the original
    in the notebook's kernel, with copies of the arguments, and returns a copy of the result."""

    def __init__(self, connection: _Connection, fn_id: int, name: str) -> None:
        self._connection, self._id, self.__name__ = connection, fn_id, name

    def __call__(self, *args: Any) -> Any:
        return self._connection.call(self._id, args)

    def __repr__(self) -> str:
        return f"<function {self.__name__}>"


def _exception(error: Any) -> Exception:
    """The learner's exception, rebuilt from its name and message (never its object)."""
    name = str(error.get("type", "Exception")) if isinstance(error, dict) else "Exception"
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    known = getattr(builtins, name, None)
    # A real StopIteration could end a checker's loop early, as if every case had been seen.
    if isinstance(known, type) and issubclass(known, Exception) and not issubclass(
            known, (StopIteration, StopAsyncIteration)):
        with contextlib.suppress(Exception):
            return known(message)
    name = name if name.isidentifier() and len(name) <= 80 else "Exception"
    return type(name, (Exception,), {})(message)


def _write_back(given: Any, changed: Any) -> None:
    """Apply a function's in-place changes to its arguments to the grader's copies."""
    if isinstance(given, torch.Generator) and isinstance(changed, torch.Generator):
        given.set_state(changed.get_state())
        return
    if isinstance(given, torch.nn.Module) and isinstance(changed, torch.nn.Module):
        theirs = dict(changed.named_parameters())
        with torch.no_grad():
            for n, p in given.named_parameters():
                if n in theirs and theirs[n].shape == p.shape:
                    if not torch.equal(p, theirs[n]):
                        p.copy_(theirs[n])
                    p.requires_grad_(theirs[n].requires_grad)
        return
    if isinstance(given, torch.Tensor) and isinstance(changed, torch.Tensor):
        if given.shape == changed.shape and given.dtype == changed.dtype and not torch.equal(given, changed):
            with torch.no_grad():
                given.copy_(changed)
    elif isinstance(given, (list, tuple)) and isinstance(changed, (list, tuple)):
        if isinstance(given, list) and (len(given) != len(changed) or not all(
                type(a) is type(b) for a, b in zip(given, changed, strict=True))):
            given[:] = changed
            return
        for a, b in zip(given, changed, strict=False):
            _write_back(a, b)
        if isinstance(given, list):
            for index, (a, b) in enumerate(zip(given, changed, strict=True)):
                if not isinstance(a, (torch.Tensor, list, tuple, dict)) and a != b:
                    given[index] = b
    elif isinstance(given, dict) and isinstance(changed, dict):
        if given.keys() != changed.keys():
            given.clear()
            given.update(changed)
            return
        for key, b in changed.items():  # item by item: a dict of tensors has no truth value
            a = given[key]
            if isinstance(a, (torch.Tensor, list, tuple, dict)):
                _write_back(a, b)
            elif type(a) is not type(b) or a != b:
                given[key] = b


class AnswerServer:
    """The grader's socket: judges each check a notebook serves, for the checks in ``checks``."""

    def __init__(self, path: str, checks: dict[str, Check], limit: Callable[[Check], float | None]) -> None:
        self.path, self.checks, self.limit = path, checks, limit
        self.results: dict[str, CheckResult] = {}
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o600)
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name="llmbook-grade-server", daemon=True)

    def __enter__(self) -> AnswerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # One bad connection (garbage, a kernel that dies) must not stop the grading.
            with sock, contextlib.suppress(Exception):
                self._judge(sock)

    def _judge(self, sock: socket.socket) -> None:
        sock.settimeout(HELLO_TIMEOUT)
        hello = wire.receive(sock)
        check_ = self.checks.get(str(hello.get("name")))
        if hello.get("op") != "hello" or check_ is None:
            return
        limit = self.limit(check_)
        connection = _Connection(sock, limit)
        try:
            answer = wire.decode(hello.get("answer"), connection.function)
        except wire.WireError as err:
            answer = wire.Opaque("unreadable", str(err))
        started = time.perf_counter()
        passed, feedback = _run(check_, answer, limit)
        result = CheckResult(check_.name, passed, check_.points if passed else 0, check_.points,
                             feedback, round(time.perf_counter() - started, 4))
        self.results[check_.name] = result
        if not connection.broken:
            with contextlib.suppress(OSError, wire.WireError):
                sock.settimeout(HELLO_TIMEOUT)
                wire.send(sock, {"op": "done", "result": asdict(result)})


__all__ = ["SOCKET_ENV", "AnswerServer", "RemoteFunction", "serve"]
