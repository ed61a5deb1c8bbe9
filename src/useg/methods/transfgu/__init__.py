"""TransFGU (Yin et al., ECCV 2022): top-down pseudo labels from concept Grad-CAMs, Segmenter, bootstrapping."""
