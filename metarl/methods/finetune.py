"""Fine-tuning a pretrained stable-baselines3 agent on each new task (docs/design.md, "Methods")."""

from metarl.methods import Method

METHOD = Method(
    name="finetune",
    train_word="finetune",
    summary="pretrain a stable-baselines3 PPO/SAC agent on the train-task mixture",
    train_args="metarl.algorithms.finetune.train_args:TrainFinetuneArgs",
    train="metarl.algorithms.finetune.train_args:run",
    evaluate="metarl.evaluation.finetune:evaluate_finetune_run",
    policies="metarl.video.policies:finetune_run_policies",
    resumable=True,
)
