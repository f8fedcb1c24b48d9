"""Evaluation shared by the evaluate command, training and benchmarks: connected components, the ESD,
pixel and instance metrics, error overlays and the evaluation report."""
