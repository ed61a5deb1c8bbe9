"""Post-processing of per-pixel class probabilities (dense CRF)."""
