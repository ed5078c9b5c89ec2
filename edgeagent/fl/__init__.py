"""Federated-learning jobs (needs the ``fl`` extra: numpy): plans, in-tree aggregation, the job runner.

Names load lazily (PEP 562): ``edgeagent.fl.job`` (job files) needs no numpy; the rest imports it
when first used, so a node that runs no federated learning never maps numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aggregate import RoundSum, apply_fedavg, from_tensors, load_model, model_bytes, to_tensors, weighted_delta
    from .job import JobSpec, load_job
    from .plans import PLAN_GROUP, LogReg, Mlp, Plan, available_plans, load_plan
    from .service import FlDevice, FlDomain, load_data

_WHERE = {
    "RoundSum": "aggregate", "apply_fedavg": "aggregate", "from_tensors": "aggregate", "load_model": "aggregate",
    "model_bytes": "aggregate", "to_tensors": "aggregate", "weighted_delta": "aggregate",
    "JobSpec": "job", "load_job": "job",
    "PLAN_GROUP": "plans", "LogReg": "plans", "Mlp": "plans", "Plan": "plans", "available_plans": "plans",
    "load_plan": "plans",
    "FlDevice": "service", "FlDomain": "service", "load_data": "service",
}  # fmt: skip

__all__ = [
    "PLAN_GROUP",
    "FlDevice",
    "FlDomain",
    "JobSpec",
    "LogReg",
    "Mlp",
    "Plan",
    "RoundSum",
    "apply_fedavg",
    "available_plans",
    "from_tensors",
    "load_data",
    "load_job",
    "load_model",
    "load_plan",
    "model_bytes",
    "to_tensors",
    "weighted_delta",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
