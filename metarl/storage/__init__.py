"""What a run leaves on disk: the run directory and its lock, metrics, and atomic, digest-checked checkpoints."""
