"""``metarl train maml``: meta-train a Gaussian MLP policy with MAML on a task family.

The flags are :class:`metarl.algorithms.maml.train_args.TrainMAMLArgs`; the training is
:func:`metarl.algorithms.maml.training.train_maml`.
"""

from __future__ import annotations

from metarl.algorithms.maml.train_args import TrainMAMLArgs, run
from metarl.core.flags import parse


def main(argv: list[str]) -> int:
    return run(parse(TrainMAMLArgs, argv, prog="metarl train maml"))
