"""Federated-learning job files (TOML): what a domain runs. See ``configs/job.example.toml``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import read_toml
from ..exceptions import ConfigError
from ..wire import Eligibility

__all__ = ["JobSpec", "load_job"]

_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEYS = {
    "id",
    "plan",
    "rounds",
    "min_participants",
    "round_deadline_s",
    "join_wait_s",
    "n_features",
    "n_classes",
    "seed",
    "test_data",
    "hyperparams",
    "eligibility",
}


@dataclass(frozen=True)
class JobSpec:
    """One job: the plan and its hyper-parameters, rounds, who may join, deadlines."""

    id: str
    plan: str
    n_features: int
    n_classes: int
    rounds: int = 5
    min_participants: int = 2
    round_deadline_s: float = 60.0
    join_wait_s: float = 30.0
    seed: int = 0
    test_data: Path | None = None
    hyperparams: dict[str, Any] = field(default_factory=dict)
    eligibility: Eligibility = field(default_factory=Eligibility)


def load_job(path: Path) -> JobSpec:
    """Parse a job file; every problem is a ConfigError naming the file and key."""
    data = read_toml(path, "job file")
    job = data.get("job")
    if not isinstance(job, dict) or set(data) != {"job"}:
        raise ConfigError(f"{path}: a job file has exactly one table, [job]")
    for key in job:
        if key not in _KEYS:
            raise ConfigError(f"{path}: unknown key job.{key} (known: {', '.join(sorted(_KEYS))})")

    def need(key: str, typ: type, check: Any = None, what: str = "") -> Any:
        if key not in job:
            raise ConfigError(f"{path}: job.{key} is required")
        v = job[key]
        if typ is float and type(v) is int:
            v = float(v)
        if type(v) is not typ or (check is not None and not check(v)):
            raise ConfigError(f"{path}: job.{key} must be {what or typ.__name__}, got {v!r}")
        return v

    def opt(key: str, typ: type, default: Any, check: Any = None, what: str = "") -> Any:
        return need(key, typ, check, what) if key in job else default

    jid = need("id", str, _ID.match, "1-64 letters, digits, '.', '_' or '-'")
    elig = job.get("eligibility", {})
    if not isinstance(elig, dict):
        raise ConfigError(f"{path}: [job.eligibility] must be a table")
    ek = {"unmetered", "charging", "min_battery", "needs_data"}
    for k, v in elig.items():
        if k not in ek:
            raise ConfigError(f"{path}: unknown key job.eligibility.{k} (known: {', '.join(sorted(ek))})")
        if k == "min_battery":
            if type(v) is not int or not 0 <= v <= 100:
                raise ConfigError(f"{path}: job.eligibility.min_battery must be 0-100, got {v!r}")
        elif type(v) is not bool:
            raise ConfigError(f"{path}: job.eligibility.{k} must be true or false, got {v!r}")
    hyper = job.get("hyperparams", {})
    if not isinstance(hyper, dict) or any(
        isinstance(v, bool) or not isinstance(v, int | float | str) for v in hyper.values()
    ):
        raise ConfigError(f"{path}: [job.hyperparams] must map names to numbers or strings")
    test = opt("test_data", str, None)
    return JobSpec(
        id=jid,
        plan=need("plan", str, bool, "a plan name"),
        n_features=need("n_features", int, lambda v: v > 0, "a positive integer"),
        n_classes=need("n_classes", int, lambda v: v > 1, "an integer > 1"),
        rounds=opt("rounds", int, 5, lambda v: 1 <= v <= 100_000, "an integer 1-100000"),
        min_participants=opt("min_participants", int, 2, lambda v: v >= 1, "a positive integer"),
        round_deadline_s=opt("round_deadline_s", float, 60.0, lambda v: 1 <= v <= 86_400, "1-86400 seconds"),
        join_wait_s=opt("join_wait_s", float, 30.0, lambda v: 0 <= v <= 86_400, "0-86400 seconds"),
        seed=opt("seed", int, 0),
        test_data=None if test is None else (path.parent / test).resolve(),
        hyperparams=dict(hyper),
        eligibility=Eligibility(**elig),
    )
