"""Sampling math that does not depend on the host: the grounding schedule and the multi-instance sampler."""
