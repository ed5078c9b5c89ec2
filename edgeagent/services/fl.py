"""Which federated-learning service a node mounts: the job runner on a domain with a job, the
participant on a device with training data, and otherwise a small stand-in that needs no numpy
(it tells its status which advertised jobs it cannot take part in, and why)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError, EdgeAgentError
from ..host import Host, Inbound, PayloadApi, Policy, Registration, Sender, Service, on
from ..wire import JobAdvert, Message

__all__ = ["NoTraining", "mount_fl"]

log = logging.getLogger(__name__)
_MAX_JOBS_KEPT = 64


class NoTraining(Service):
    """A device without training data: it hears JobAdverts and says why it does not join."""

    name = "fl"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.jobs: dict[str, str] = {}  # job id -> plan

    def handlers(self) -> Mapping[type[Message], Registration]:
        return {JobAdvert: on(Policy(Sender.DOMAIN), self._on_advert)}

    async def _on_advert(self, m: Inbound[JobAdvert]) -> None:
        if m.body.job_id not in self.jobs:
            if len(self.jobs) >= _MAX_JOBS_KEPT:
                self.jobs.pop(next(iter(self.jobs)))
            log.info("job %s: not taking part (%s)", m.body.job_id, self.reason)
        self.jobs[m.body.job_id] = m.body.plan

    def status_fields(self) -> dict[str, Any]:
        jobs = [
            {"job": j, "plan": plan, "joined": False, "not_eligible": self.reason, "round": None, "accuracy": None,
             "done": False}
            for j, plan in self.jobs.items()
        ]  # fmt: skip
        return {"fl": {"role": "device", "jobs": jobs}}


def mount_fl(
    node: Any, payloads: PayloadApi, *, role: str, job: Any, data: Path | None, run_conditions: Any
) -> tuple[Any, Any]:
    """Mount the node's FL service (``node.mount``); returns (the FlDomain or None, the FlDevice or None)."""
    host: Host = node
    if job is not None:
        from ..fl.service import FlDomain

        return node.mount(FlDomain(host, payloads, job)), None
    if role == "domain":
        return None, None
    if data is None:
        node.mount(NoTraining("no local training data (start the device with --data FILE)"))
        return None, None
    try:
        from ..fl.device import FlDevice, load_data
    except ImportError:  # numpy missing: this device cannot train (install the fl extra)
        log.warning("federated learning off: numpy is not installed (pip install 'edgeagent[fl]')")
        node.mount(NoTraining("numpy is not installed (pip install 'edgeagent[fl]')"))
        return None, None
    try:
        load_data(data)  # a bad --data file is an error at start, not a silent round-by-round failure
    except EdgeAgentError as exc:
        raise ConfigError(f"--data: {exc}") from None
    return None, node.mount(FlDevice(host, payloads, data, run_conditions=run_conditions))
