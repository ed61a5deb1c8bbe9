"""Seeing the results: overlays, charts, comparison tables, label-map summaries, HDF5 export, predict."""
