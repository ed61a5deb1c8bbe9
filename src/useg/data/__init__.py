"""Datasets: readers that all produce the same manifest, and the embedded synthetic scenes."""
