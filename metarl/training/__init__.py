"""The one training loop: checkpoints, resume, Ctrl-C and SIGTERM, metrics and progress."""
