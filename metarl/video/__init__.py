"""Rollout videos: the rendering backend, frames and captions, and videos of a run before and after adaptation."""
