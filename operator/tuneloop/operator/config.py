"""The operator's own knobs: command-line flags and environment, parsed once at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tuneloop.operator.allowlist import AllowLists
from tuneloop.operator.builders import TrainerDefaults


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class OperatorConfig:
    trainer: TrainerDefaults = field(default_factory=TrainerDefaults)
    # Status comes from in-memory indexes (no API call unless something changed). Measured
    # against the emulator: 100 active jobs at a 2 s interval keep the operator at ~4% of a
    # core (~0.8 ms per pass), so 1000 active jobs at 5 s cost ~16%. Finished jobs cost
    # nothing: the timer stops.
    status_interval: float = 5.0
    # Progress comes over the network from the trainer pod: less often, with a hard timeout.
    scrape_interval: float = 15.0
    scrape_timeout: float = 3.0
    unschedulable_after: float = 300.0
    # Images, ServiceAccounts and priority classes a FineTuneJob may ask for (SECURITY.md).
    allowed: AllowLists = field(default_factory=AllowLists)

    @classmethod
    def from_env(cls) -> "OperatorConfig":
        return cls(
            trainer=TrainerDefaults(image=os.environ.get("TUNELOOP_TRAINER_IMAGE", TrainerDefaults.image)),
            status_interval=_env_float("TUNELOOP_STATUS_INTERVAL", cls.status_interval),
            scrape_interval=_env_float("TUNELOOP_SCRAPE_INTERVAL", cls.scrape_interval),
            scrape_timeout=_env_float("TUNELOOP_SCRAPE_TIMEOUT", cls.scrape_timeout),
            unschedulable_after=_env_float("TUNELOOP_UNSCHEDULABLE_AFTER", cls.unschedulable_after),
            allowed=AllowLists.from_env(),
        )
