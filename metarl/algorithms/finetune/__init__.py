"""The fine-tune-from-a-pretrained-policy baseline on stable-baselines3."""
