"""metarl: meta-reinforcement learning for robot control.

Learning, evaluation, rendering and the command line, built on the task suite
in :mod:`envs` through its task protocol only (DESIGN.md §1-2).
"""

__version__ = "0.1.0"
