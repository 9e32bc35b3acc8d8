"""``metarl train protonet``: parse the flags of :class:`metarl.identification.run.TrainProtoNetArgs` and train."""

from __future__ import annotations

from metarl.core.flags import parse
from metarl.identification.run import TrainProtoNetArgs, train_from_args


def main(argv: list[str]) -> int:
    return train_from_args(parse(TrainProtoNetArgs, argv, prog="metarl train protonet"))
