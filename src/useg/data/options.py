"""Dataset options: the `dataset.*` keys a benchmark reader needs besides its root."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetOptions:
    """The `dataset.*` keys a benchmark reader needs besides its root."""

    setting: int | None = None  # label setting (COCO-Stuff 27/171/80, LIP 19/16/5, ImageNet-S 50/300/919)
    splits: tuple[str, ...] = ()  # split names to list (train_split, eval_split, extra_splits)
    image_lists: dict[str, str] = field(default_factory=dict)  # split -> file naming the images to keep
    class_list: str | None = None  # ImageNet-S class-list file
    split_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # voc: split -> list files of several VOC folders

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DatasetOptions:
        """Options from the manifest stage's config slice (missing keys: defaults)."""
        named = [params.get("train_split"), params.get("eval_split"), *(params.get("extra_splits") or [])]
        splits = tuple(dict.fromkeys(s for s in named if s))
        lists = {split: tuple(files) for split, files in (params.get("split_lists") or {}).items()}
        return cls(params.get("setting"), splits, dict(params.get("image_lists") or {}), params.get("class_list"), lists)
