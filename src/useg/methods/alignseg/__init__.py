"""AlignSeg: a prototype Transformer decoder on frozen ViT features, segmenting each image end to end."""
