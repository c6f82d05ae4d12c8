"""Interference diagnostics computed from a run directory (never from the trainer's objects): gradient conflicts
per domain pair, group and layer (`conflict`), per-domain reward / entropy / length curves (`training`), and
forgetting / rigidity of sequential runs (`sequential`). `RunDir` (`rundir`) is the reader they share."""

from mgs.diagnostics.rundir import RunDir, is_run_dir

__all__ = ["RunDir", "is_run_dir"]
