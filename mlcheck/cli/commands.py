"""One module per `mlcheck` subcommand; each has ``register(subparsers)``.

A module's ``register`` adds its parser (with ``--help`` text that lists its exit codes) and sets
``handler`` to a function ``(argparse.Namespace) -> int``. Keep imports inside handlers cheap and
lazy: ``mlcheck --help`` must not import torch.
"""

from __future__ import annotations

from types import ModuleType

from . import add, cache, calibrate, golden, lock, mutate, nightly, publish, report, run, schedule

# Order is the order in `mlcheck --help`.
COMMAND_MODULES: list[ModuleType] = [run, add, lock, cache, report, schedule, publish, golden]
COMMAND_MODULES += [mutate, calibrate]  # test power (mlcheck.power)
COMMAND_MODULES += [nightly]  # the nightly's file map for select: changed (issue 25)
