"""Training: fine-tuning SAM2 and the lite model, losses, data, hyperparameter search."""
