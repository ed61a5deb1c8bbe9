"""Readers of standard benchmark layouts (VOC, COCO-Stuff, COCO20k, Cityscapes, LIP, ImageNet-S)."""
