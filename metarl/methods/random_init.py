"""Random initialisation: an untrained policy adapted like MAML (docs/design.md, "Methods")."""

from metarl.methods import Method

METHOD = Method(
    name="random_init",
    train_word="random-init",
    summary="create a random-initialisation baseline run (adapted at evaluation like MAML)",
    train_args="metarl.commands.train_random_init:RandomInitArgs",
    train="metarl.commands.train_random_init:run",
    evaluate="metarl.algorithms.random_init:evaluate_random_init_run",
    policies="metarl.video.run_videos:gradient_run_policies",
    resumable=False,
)
