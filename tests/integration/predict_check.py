"""`useg predict` on a finished tiny run: a method's model, applied to the run's own evaluation images from
another folder, gives the labels the pipeline's predictions store holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from useg.cli import main
from useg.data.manifest import read_manifest

OUT = "results/tiny"


def evaluation_images(workdir: Path, split: str = "val") -> Path:
    """The split's images copied to workdir/predict-images/<id>.png."""
    folder = workdir / "predict-images"
    folder.mkdir(exist_ok=True)
    for row in read_manifest(workdir / OUT / "manifest.csv"):
        if row.split == split:
            shutil.copy(workdir / row.path, folder / f"{row.id}{Path(row.path).suffix}")
    return folder


def predict_agreement(workdir: Path, method: str, column: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> float:
    """Share of pixels where `useg predict --method METHOD` (run from elsewhere, the model found from the config)
    agrees with results/tiny/COLUMN/predictions.zarr."""
    images = evaluation_images(workdir)
    out = workdir / f"predict-{method}"
    monkeypatch.chdir(workdir.parent)  # paths come from the config's folder, not the current one
    args = ["predict", "--method", method, "--config", str(workdir / "test-config.yaml"), "--images", str(images)]
    assert main([*args, "--out", str(out), *extra]) == 0
    store = zarr.open_group(str(workdir / OUT / column / "predictions.zarr"), mode="r")
    labels, ids = store["labels"][:], [str(i) for i in store["ids"][:]]
    assert sorted(p.stem for p in (out / "labels").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (out / "overlays").iterdir()) == sorted(ids)
    predicted = np.stack([np.asarray(Image.open(out / "labels" / f"{i}.png")) for i in ids])
    assert predicted.shape == labels.shape
    return float((predicted == labels).mean())


def assert_other_methods_model_is_refused(workdir: Path, method: str, model: str, capsys: pytest.CaptureFixture) -> None:
    """`--method OTHER --model <METHOD's model>` fails naming the method that made it."""
    other = "alignseg" if method != "alignseg" else "transfgu"
    path = workdir / OUT / model
    args = ["predict", "--method", other, "--model", str(path), "--config", str(workdir / "test-config.yaml")]
    capsys.readouterr()
    assert main([*args, "--images", str(evaluation_images(workdir)), "--out", str(workdir / "refused")]) == 2
    assert f"is a model of {method}, not of {other}: pass --method {method}" in capsys.readouterr().err
    assert not (workdir / "refused").exists()
