"""Clustering: faiss k-means (CPU or GPU) and Hungarian matching."""

from useg.cluster.hungarian import hungarian_match, many_to_one_match
from useg.cluster.kmeans import KMeansResult, assign, fit_kmeans

__all__ = ["KMeansResult", "assign", "fit_kmeans", "hungarian_match", "many_to_one_match"]
