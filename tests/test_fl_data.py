"""A device's training data is checked against the job when the advert arrives: a mismatch is one
clear log line at the device and a reason the domain reports by device (issue 18, item 5); a bad
``--data`` file is an error at start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.exceptions import ConfigError
from edgeagent.fl.checks import N_CLASSES, N_FEATURES, data_problem, plan_hyperparams
from edgeagent.fl.device import FlDevice
from edgeagent.fl.job import JobSpec
from edgeagent.fl.service import FlDomain
from edgeagent.identity import Identity
from edgeagent.netcost.battery import BatteryState
from edgeagent.services.fl import mount_fl
from edgeagent.wire import Eligibility, JobAdvert, JoinReply, JoinRequest
from tests.conftest import FakeHost

FEATURES, CLASSES = 8, 3


def _data(path: Path, features: int, labels: Any) -> Path:
    y = np.asarray(labels)
    np.savez(path, x=np.zeros((len(y), features), np.float32), y=y)
    return path


def test_data_problem_names_what_does_not_fit() -> None:
    hyper: dict[str, object] = {N_FEATURES: FEATURES, N_CLASSES: CLASSES, "lr": 0.1}
    assert data_problem((10, FEATURES), np.arange(10) % CLASSES, hyper) is None
    why = data_problem((10, 5), np.zeros(10, np.int64), hyper)
    assert why is not None and "5 features" in why and f"takes {FEATURES}" in why
    why = data_problem((10, FEATURES), np.arange(10), hyper)
    assert why is not None and "labels run 0..9" in why and f"0..{CLASSES - 1}" in why
    assert data_problem((10, 5), np.arange(10), {}) is None  # an advert that does not say: nothing to check
    assert plan_hyperparams(hyper) == {"lr": 0.1}


def _device(tmp_path: Path, data: Path) -> tuple[FakeHost, FlDevice, Any]:
    host = FakeHost(tmp_path / "dev")
    domain = Identity.generate().node_id
    host.peers.domains.add(domain)
    host.replies[JoinRequest] = lambda peer, body: JoinReply(body.job_id, not body.declined, "noted")
    dev = FlDevice(host, None, data, battery=lambda: BatteryState(90.0, True, "test"))  # type: ignore[arg-type]
    return host, dev, domain


async def test_a_device_whose_data_does_not_fit_declines_once_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host, dev, domain = _device(tmp_path, _data(tmp_path / "d.npz", 5, [0, 1, 2, 1]))
    advert = JobAdvert("j", "logreg", None, {N_FEATURES: FEATURES, N_CLASSES: CLASSES}, 1, 1, Eligibility(), 5000)
    with caplog.at_level(logging.WARNING, logger="edgeagent.fl.device"):
        for _ in range(3):  # the domain re-advertises every few seconds
            await host.deliver(dev, advert, domain)
        for task in list(host.tasks):
            await task
    lines = [r.getMessage() for r in caplog.records if "not taking part" in r.getMessage()]
    assert len(lines) == 1 and "5 features" in lines[0]
    told = [b for _, b in host.sent if isinstance(b, JoinRequest)]
    assert len(told) == 1 and "5 features" in told[0].declined and told[0].num_samples == 0
    assert "j" not in dev.joined and "5 features" in dev.status()["jobs"][0]["not_eligible"]
    await dev.aclose()


async def test_a_device_whose_data_fits_joins(tmp_path: Path) -> None:
    host, dev, domain = _device(tmp_path, _data(tmp_path / "d.npz", FEATURES, [0, 1, 2, 1]))
    advert = JobAdvert("j", "logreg", None, {N_FEATURES: FEATURES, N_CLASSES: CLASSES}, 1, 1, Eligibility(), 5000)
    await host.deliver(dev, advert, domain)
    for task in list(host.tasks):
        await task
    told = [b for _, b in host.sent if isinstance(b, JoinRequest)]
    assert len(told) == 1 and not told[0].declined and told[0].num_samples == 4
    assert "j" in dev.joined
    await dev.aclose()


async def test_the_domain_reports_by_device_why_it_does_not_take_part(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "dom", role="domain")
    host.peers.allow = None
    spec = JobSpec("j", "logreg", FEATURES, CLASSES, rounds=1, min_participants=1, round_deadline_s=5.0)
    dom = FlDomain(host, None, spec)  # type: ignore[arg-type]
    assert dom.advert().hyperparams[N_FEATURES] == FEATURES and dom.advert().hyperparams[N_CLASSES] == CLASSES
    dev = Identity.generate().node_id
    out = await host.deliver(dom, JoinRequest("j", 0, ("logreg",), declined="the local data has 5 features"), dev)
    assert isinstance(out[0].body, JoinReply) and not out[0].body.accepted
    assert dom.status()["not_eligible"] == {str(dev): "the local data has 5 features"}
    assert dev not in dom.joined
    out = await host.deliver(dom, JoinRequest("j", 4, ("logreg",)), dev)  # fixed its data, and joins
    assert isinstance(out[0].body, JoinReply) and out[0].body.accepted
    assert dom.status()["not_eligible"] == {} and dom.joined[dev] == 4


@pytest.mark.parametrize("content", [None, b"not an npz at all"])
def test_a_missing_or_unreadable_data_file_is_an_error_at_start(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "data.npz"
    if content is not None:
        path.write_bytes(content)
    host = FakeHost(tmp_path / "dev")
    mounted: list[Any] = []
    host.mount = lambda service: mounted.append(service) or service  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="--data: cannot read training data"):
        mount_fl(host, None, role="device", job=None, data=path, run_conditions=None)  # type: ignore[arg-type]
    assert mounted == []
