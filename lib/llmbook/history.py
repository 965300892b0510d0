"""What happened during training: one ``History`` for every loop (chapters 8–12).

Every loop records the same things per step (the loss over the step's counted targets,
the learning rate, what the objective logged) and, at each evaluation, whatever its
evaluation measures (losses for a language model, accuracies for a classifier). The
series are reached by name, ``history.val_loss`` or ``history.val_acc``, and
``plot`` draws them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

_LABELS = {"eval_train_loss": "train (eval)", "val_loss": "validation",
           "train_acc": "train", "val_acc": "validation"}


@dataclass
class History:
    """Per-step series, and the series measured at each evaluation.

    ``steps``, ``train_loss`` (mean over the step's counted targets), ``lr`` and
    ``logs[name]`` (the objective's per-step means, e.g. DPO's ``reward_margin``) have one
    entry per step; ``eval_steps`` and ``evals[name]`` (e.g. ``val_loss``, ``val_acc``)
    one per evaluation. Any name in ``logs`` or ``evals`` is also an attribute.
    """

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    tokens_seen: int = 0
    seconds: float = 0.0

    def __getattr__(self, name: str) -> list[float]:
        # Only called when ordinary lookup fails: the named series of logs or evals.
        if not name.startswith("_") and name not in ("logs", "evals"):
            for series in (self.__dict__.get("evals", {}), self.__dict__.get("logs", {})):
                if name in series:
                    return series[name]
        known = sorted({*self.__dict__.get("evals", {}), *self.__dict__.get("logs", {})})
        raise AttributeError(f"History has no series {name!r}; it has steps, train_loss, lr, eval_steps "
                             f"and the series {known}")

    def record_step(self, step: int, loss: float, lr: float, logs: dict[str, float]) -> None:
        self.steps.append(step)
        self.train_loss.append(loss)
        self.lr.append(lr)
        for key, value in logs.items():
            self.logs.setdefault(key, []).append(value)

    def record_eval(self, step: int, measured: dict[str, float]) -> None:
        self.eval_steps.append(step)
        for key, value in measured.items():
            self.evals.setdefault(key, []).append(value)

    def extend(self, later: History, offset: int) -> None:
        """Append a later run's history (a second training phase), its steps moved on by ``offset``."""
        for step, loss, lr in zip(later.steps, later.train_loss, later.lr, strict=True):
            self.record_step(step + offset, loss, lr, {})
        for key, values in later.logs.items():
            self.logs.setdefault(key, []).extend(values)
        for i, step in enumerate(later.eval_steps):
            self.record_eval(step + offset, {k: v[i] for k, v in later.evals.items()})
        self.tokens_seen += later.tokens_seen
        self.seconds += later.seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> History:
        return cls(**d) if d else cls()

    @property
    def final_val_loss(self) -> float:
        if not self.evals.get("val_loss"):
            raise ValueError("no validation loss was recorded (pass val_data and eval_interval)")
        return self.evals["val_loss"][-1]

    def plot(self, ax: Any = None, title: str | None = None, smooth: int = 20,
             metric: str = "loss", label: str = "") -> Any:
        """Curves against the step: ``metric="loss"`` draws the noisy per-step training loss,
        its running mean, and the evaluated losses; any other ``metric`` (e.g. ``"acc"``)
        draws the evaluated series whose name ends in ``_<metric>``. ``label`` prefixes
        the legend entries, to tell several runs apart on one axis."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        prefix = f"{label}: " if label else ""
        colour = None
        if metric == "loss" and self.steps:
            colour = ax.plot(self.steps, self.train_loss, alpha=0.25, lw=0.8,
                             label=f"{prefix}train (per step)")[0].get_color()
            if len(self.train_loss) > smooth:
                k = torch.ones(smooth) / smooth
                smoothed = torch.conv1d(torch.tensor(self.train_loss)[None, None], k[None, None])[0, 0]
                ax.plot(self.steps[smooth - 1:], smoothed.tolist(), color=colour, lw=1.2,
                        label=f"{prefix}train (mean of {smooth} steps)")
        names = [n for n in self.evals if n.endswith(f"_{metric}")]
        for name in names:
            style = "o-" if name.startswith("val") else "o--"
            # One run (no label): validation gets a colour of its own; several runs on one
            # axis: each run keeps one colour, dashed for train and solid for validation.
            same = colour if label or not name.startswith("val") else None
            line = ax.plot(self.eval_steps, self.evals[name], style, ms=3, color=same,
                           label=prefix + _LABELS.get(name, name))[0]
            colour = colour or line.get_color()
        ax.set_xlabel("training step")
        ax.set_ylabel("cross-entropy loss (nats per token)" if metric == "loss" else metric)
        ax.set_title(title or ("Loss during training" if metric == "loss" else f"{metric} during training"))
        ax.grid(alpha=0.3)
        ax.legend()
        return ax


__all__ = ["History"]
