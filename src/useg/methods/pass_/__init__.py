"""PASS (LUSS paper): pixel-attention SwAV pretraining, image-level k-means, head fine-tuning, CAM inference."""
