"""Routes: discovered, measured, chosen per message (DESIGN s.3).

Pure: nothing here does I/O, sleeps or reads a clock; callers pass ``now``.
``edgeagent.node`` feeds link events and measurements in and sends along the
routes chosen here.
"""

from .policy import STREAM_THRESHOLD, Choice, DefaultPolicy, Policy, Purpose, Router, Traits, choose_mode, rank
from .priors import Priors
from .table import BroadcastRoute, Candidate, HopState, RouteTable, SoloRoute, hop_kind

__all__ = [
    "STREAM_THRESHOLD",
    "choose_mode",
    "BroadcastRoute",
    "Candidate",
    "Choice",
    "DefaultPolicy",
    "HopState",
    "Policy",
    "Priors",
    "Purpose",
    "RouteTable",
    "Router",
    "SoloRoute",
    "Traits",
    "hop_kind",
    "rank",
]
