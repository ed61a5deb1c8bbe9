"""Image preprocessing shared by every stage that feeds the backbone."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 image to (height, width): area filter when shrinking, bilinear when growing."""
    height, width = size
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def normalise(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 3xHxW float tensor normalised with ImageNet statistics."""
    import torch  # here, not at module level: label-only stages (evaluation) never load torch

    arr = (image.astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D id map to (height, width) with nearest-neighbour sampling."""
    height, width = size
    if labels.shape == (height, width):
        return labels
    return cv2.resize(labels.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST).astype(labels.dtype)


def scale_rotate(image: np.ndarray, labels: np.ndarray, degrees: float, scale: float, fill_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by `degrees` and zoom by `scale` about the centre, same size (the ScaleNRotate of DeepLab
    trainers): the image bicubic with black outside, the label map nearest with `fill_label` outside."""
    height, width = labels.shape
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, scale)
    warped = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC, borderValue=(0, 0, 0))
    kept = cv2.warpAffine(labels.astype(np.uint16), matrix, (width, height), flags=cv2.INTER_NEAREST, borderValue=int(fill_label))
    return warped, kept.astype(labels.dtype)
