"""ProtoNet task identification: which variant is this, from a few transitions (docs/design.md, "Methods")."""

from metarl.methods import Method

METHOD = Method(
    name="protonet",
    train_word="protonet",
    summary="train a ProtoNet encoder that identifies the task variant from a few transitions",
    train_args="metarl.identification.run:TrainProtoNetArgs",
    train="metarl.identification.run:train_from_args",
    evaluate="metarl.evaluation.identification:evaluate_protonet_run",
    policies=None,
    kind="identification",
)
