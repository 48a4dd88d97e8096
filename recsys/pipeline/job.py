"""One training job as the stages see it: its config, run folder and place in a torchrun job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import TrainConfig

__all__ = ["Job", "logger"]

#: The pipeline's log records carry the package's name, ``recsys.pipeline``, whichever stage
#: writes them.
logger = logging.getLogger(__package__)


@dataclass(frozen=True)
class Job:
    """A validated config, the run folder and the communicator of a distributed run (None alone).

    ``protocol`` says how the settings were chosen when a tuning study chose them (written to
    metadata.json as it is; None for a run configured by hand).

    Rank 0 (or the only process) is the primary one: it alone evaluates, checkpoints, logs,
    shows progress and writes the artifacts.
    """

    conf: TrainConfig
    out: Path
    comm: Any | None = None
    protocol: dict[str, Any] | None = None

    @property
    def primary(self) -> bool:
        return self.comm is None or self.comm.rank == 0

    @property
    def distributed(self) -> Any:
        """The ``distributed`` argument of ``ALS.fit``: the communicator, or False."""
        return self.comm if self.comm is not None else False

    def info(self, message: str, *args: Any) -> None:
        """Log on the primary process; the other ranks stay quiet."""
        if self.primary:
            logger.info(message, *args)
