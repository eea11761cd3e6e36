"""The one small backend interface: open a model on a device, run named numpy inputs, return named outputs."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timings:
    """Wall-clock milliseconds of each `run` call (the backend's own compute time where it reports one)."""

    run_ms: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.run_ms.clear()


class Backend(ABC):
    """A loaded model. Subclasses set `input_names`/`output_names` and implement `_run`."""

    name: str = "base"
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.timings = Timings()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. `feeds` maps every input name to a C-contiguous array; returns outputs by name."""
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise KeyError(f"{self.name}: missing inputs {sorted(missing)}; model inputs are {self.input_names}")
        t0 = time.perf_counter()
        out = self._run({k: np.ascontiguousarray(feeds[k]) for k in self.input_names})
        self.timings.run_ms.append(self._last_compute_ms(t0))
        return out

    def _last_compute_ms(self, t0: float) -> float:
        """Time of the call just made; backends with a device-side timer override this."""
        return (time.perf_counter() - t0) * 1e3

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, str]:
        """Backend name, runtime version and device, for the report."""
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold no device resources
        """Free device resources (no-op by default)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
