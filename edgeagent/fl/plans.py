"""Training plans: what a device runs on its local data in one federated round.

A plan is Python code installed on the device — built in here, or from an
installed package that registers it under the entry-point group
``edgeagent.plans`` — and is chosen by name in a job. A job never ships code.

A plan works on a model given as a list of float32 numpy arrays:

* ``init(hyper, n_features, n_classes, seed)`` -> the initial parameters;
* ``train(params, x, y, hyper, deadline)`` -> ``(new_params, metrics)``; it must
  return before ``deadline`` (a ``time.monotonic()`` value): the built-ins check
  it after every mini-batch and stop early (counted in ``metrics["stopped_early"]``);
* ``evaluate(params, x, y)`` -> metrics (``accuracy``, ``loss``).

The built-ins are multinomial logistic regression (``logreg``) and a
one-hidden-layer perceptron (``mlp``), trained with mini-batch SGD.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..exceptions import EdgeAgentError

__all__ = ["PLAN_GROUP", "LogReg", "Mlp", "Plan", "available_plans", "load_plan"]

PLAN_GROUP = "edgeagent.plans"
Array = npt.NDArray[np.float32]
Params = list[Array]


class Plan(Protocol):
    @property
    def name(self) -> str: ...

    def init(self, hyper: Mapping[str, Any], n_features: int, n_classes: int, seed: int) -> Params: ...

    def train(
        self, params: Params, x: Array, y: npt.NDArray[np.int64], hyper: Mapping[str, Any], deadline: float
    ) -> tuple[Params, dict[str, float]]: ...

    def evaluate(self, params: Params, x: Array, y: npt.NDArray[np.int64]) -> dict[str, float]: ...


def _softmax(z: Array) -> Array:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


def _xent(p: Array, y: npt.NDArray[np.int64]) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)).mean())


def _hyper(hyper: Mapping[str, Any], key: str, default: float) -> float:
    v = hyper.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise EdgeAgentError(f"hyper-parameter {key} must be a number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class _SgdPlan:
    """Shared mini-batch SGD loop; subclasses give forward/backward."""

    name: str = ""

    def forward(self, params: Params, x: Array) -> tuple[Array, Any]:
        raise NotImplementedError

    def backward(self, params: Params, cache: Any, x: Array, grad_z: Array) -> Params:
        raise NotImplementedError

    def train(
        self, params: Params, x: Array, y: npt.NDArray[np.int64], hyper: Mapping[str, Any], deadline: float
    ) -> tuple[Params, dict[str, float]]:
        lr = _hyper(hyper, "lr", 0.1)
        epochs = int(_hyper(hyper, "epochs", 1))
        batch = max(1, int(_hyper(hyper, "batch_size", 32)))
        l2 = _hyper(hyper, "l2", 0.0)
        seed = int(_hyper(hyper, "seed", 0))
        rng = np.random.default_rng(seed)
        params = [p.copy() for p in params]
        stopped = 0.0
        n = len(y)
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch):
                if time.monotonic() >= deadline:
                    stopped = 1.0
                    break
                idx = order[start : start + batch]
                xb, yb = x[idx], y[idx]
                p, cache = self.forward(params, xb)
                g = p.copy()
                g[np.arange(len(yb)), yb] -= 1.0
                g /= len(yb)
                grads = self.backward(params, cache, xb, g)
                for w, gw in zip(params, grads, strict=True):
                    step = gw + np.float32(l2) * w if w.ndim > 1 else gw
                    np.subtract(w, np.float32(lr) * step, out=w)
            if stopped:
                break
        metrics = self.evaluate(params, x, y)
        metrics["stopped_early"] = stopped
        return params, {f"train_{k}" if k in ("accuracy", "loss") else k: v for k, v in metrics.items()}

    def evaluate(self, params: Params, x: Array, y: npt.NDArray[np.int64]) -> dict[str, float]:
        p, _ = self.forward(params, x)
        return {"accuracy": float((p.argmax(axis=1) == y).mean()), "loss": _xent(p, y)}


@dataclass(frozen=True)
class LogReg(_SgdPlan):
    """Multinomial logistic regression: parameters [W (features x classes), b (classes)]."""

    name: str = "logreg"

    def init(self, hyper: Mapping[str, Any], n_features: int, n_classes: int, seed: int) -> Params:
        return [np.zeros((n_features, n_classes), np.float32), np.zeros(n_classes, np.float32)]

    def forward(self, params: Params, x: Array) -> tuple[Array, Any]:
        w, b = params
        return _softmax(x @ w + b), None

    def backward(self, params: Params, cache: Any, x: Array, grad_z: Array) -> Params:
        return [x.T @ grad_z, grad_z.sum(axis=0)]


@dataclass(frozen=True)
class Mlp(_SgdPlan):
    """One hidden ReLU layer: parameters [W1, b1, W2, b2]; ``hidden`` units (hyper-parameter, default 32)."""

    name: str = "mlp"

    def init(self, hyper: Mapping[str, Any], n_features: int, n_classes: int, seed: int) -> Params:
        hidden = int(_hyper(hyper, "hidden", 32))
        rng = np.random.default_rng(seed)
        w1 = rng.normal(0, np.sqrt(2.0 / n_features), (n_features, hidden)).astype(np.float32)
        w2 = rng.normal(0, np.sqrt(2.0 / hidden), (hidden, n_classes)).astype(np.float32)
        return [w1, np.zeros(hidden, np.float32), w2, np.zeros(n_classes, np.float32)]

    def forward(self, params: Params, x: Array) -> tuple[Array, Any]:
        w1, b1, w2, b2 = params
        h = np.maximum(x @ w1 + b1, 0)
        return _softmax(h @ w2 + b2), h

    def backward(self, params: Params, cache: Any, x: Array, grad_z: Array) -> Params:
        _, _, w2, _ = params
        h = cache
        gh = (grad_z @ w2.T) * (h > 0)
        return [x.T @ gh, gh.sum(axis=0), h.T @ grad_z, grad_z.sum(axis=0)]


_BUILTIN: dict[str, Callable[[], Plan]] = {"logreg": LogReg, "mlp": Mlp}


def available_plans() -> list[str]:
    """Names of the plans this device can run: built-ins and installed ``edgeagent.plans`` entry points."""
    return sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group=PLAN_GROUP)})


def load_plan(name: str) -> Plan:
    """The plan called ``name``; raises EdgeAgentError when this device does not have it."""
    factory = _BUILTIN.get(name)
    if factory is not None:
        return factory()
    for ep in entry_points(group=PLAN_GROUP):
        if ep.name == name:
            try:
                obj = ep.load()
            except Exception as exc:  # a broken installed plan must not take the agent down
                raise EdgeAgentError(f"plan {name!r} from {ep.value} failed to load: {exc}") from exc
            plan = obj() if isinstance(obj, type) else obj
            for attr in ("init", "train", "evaluate"):
                if not callable(getattr(plan, attr, None)):
                    raise EdgeAgentError(f"plan {name!r} from {ep.value} has no {attr}()")
            return plan  # type: ignore[no-any-return]
    raise EdgeAgentError(f"no plan {name!r} on this device (available: {', '.join(available_plans())})")
