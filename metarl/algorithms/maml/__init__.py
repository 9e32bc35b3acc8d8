"""MAML: its configuration, the learner (inner and outer loops) and the curvature products its trust region needs."""
