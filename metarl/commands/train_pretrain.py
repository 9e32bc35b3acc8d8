"""``metarl train pretrain``: the MAML paper's "pretrained" baseline (TRPO on the task mixture).

The flags are :class:`metarl.algorithms.pretrain_args.TrainPretrainArgs`; the training is
:func:`metarl.algorithms.pretrain.train_pretrain`.
"""

from __future__ import annotations

from metarl.algorithms.pretrain_args import TrainPretrainArgs, run
from metarl.core.flags import parse


def main(argv: list[str]) -> int:
    return run(parse(TrainPretrainArgs, argv, prog="metarl train pretrain"))
