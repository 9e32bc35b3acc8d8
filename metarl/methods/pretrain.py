"""The MAML paper's pretrained baseline: TRPO on the task mixture, adapted like MAML (docs/design.md, "Methods")."""

from metarl.methods import Method

METHOD = Method(
    name="pretrain",
    train_word="pretrain",
    summary="the MAML paper's pretrained baseline: TRPO on the task mixture, adapted like MAML",
    train_args="metarl.algorithms.pretrain_args:TrainPretrainArgs",
    train="metarl.algorithms.pretrain_args:run",
    evaluate="metarl.algorithms.pretrain:evaluate_pretrain_run",
    policies="metarl.video.run_videos:gradient_run_policies",
)
