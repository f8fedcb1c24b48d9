"""Pipeline stages: pure functions over arrays (tiling, intensity levels, prompts, SAM2 multimask choice,
speckle counting, the per-patch decision, stitching, the classical segmenters)."""
