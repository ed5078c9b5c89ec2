"""Federated-learning jobs (needs the ``fl`` extra: numpy): plans, in-tree aggregation, the job runner."""

from .aggregate import RoundSum, apply_fedavg, from_tensors, load_model, model_bytes, to_tensors, weighted_delta
from .job import JobSpec, load_job
from .plans import PLAN_GROUP, LogReg, Mlp, Plan, available_plans, load_plan
from .service import FlDevice, FlDomain, load_data

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
