"""Runtime: the multi-scale segmentation pipeline, backends, metrics."""
