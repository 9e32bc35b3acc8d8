"""MAML: meta-trained initial weights, adapted by policy-gradient steps (docs/design.md, "Methods")."""

from metarl.methods import Method

METHOD = Method(
    name="maml",
    train_word="maml",
    summary="meta-train a policy with MAML (TRPO or ProMP outer loop)",
    train_args="metarl.algorithms.maml.train_args:TrainMAMLArgs",
    train="metarl.algorithms.maml.train_args:run",
    evaluate="metarl.evaluation.protocol:evaluate_maml_run",
    policies="metarl.video.policies:gradient_run_policies",
)
