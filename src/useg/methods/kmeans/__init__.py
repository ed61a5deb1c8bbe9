"""Baseline `kmeans`: per-dataset k-means of patch tokens (the CrOC / STEGO clustering protocol)."""
