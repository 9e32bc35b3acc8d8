"""The building blocks every method shares: policy, episodes, the sampler, returns and baselines, validation, device, interrupts and errors."""
