"""The learning algorithms: adaptation (the inner step), trust region, MAML, the pretrained baseline, random initialisation and SB3 fine-tuning."""
