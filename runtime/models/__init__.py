"""Model families (SAM2, lite): specs, weights and checkpoints, io-specs, segmenters, the family registry."""
