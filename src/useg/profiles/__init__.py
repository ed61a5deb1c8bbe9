"""Snakemake profiles shipped with the workflow, and installing them as named profiles."""
