"""The evaluation protocol, its statistics and the comparison of runs."""
