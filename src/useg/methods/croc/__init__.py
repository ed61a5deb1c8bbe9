"""CrOC: backbone pretraining by self-distillation with cross-view online clustering."""
