"""Evaluation: confusion matrices and the named protocols (hungarian, overcluster, ...)."""
