"""``metarl train finetune``: pretrain a stable-baselines3 agent on the train-task mixture.

The flags and the training are :mod:`metarl.algorithms.finetune.train_args`; this module parses them.
"""

from __future__ import annotations

from metarl.algorithms.finetune.train_args import TrainFinetuneArgs, run
from metarl.core.flags import parse


def main(argv: list[str]) -> int:
    return run(parse(TrainFinetuneArgs, argv, prog="metarl train finetune"))
