"""Synthetic SEM data: procedural Manhattan layouts and a physically motivated SEM imaging model."""
