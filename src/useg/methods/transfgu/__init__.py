"""TransFGU (Yin et al., ECCV 2022): top-down pseudo labels from concept Grad-CAMs, Segmenter, bootstrapping."""

from typing import Any


def final_model(config: dict[str, Any]) -> str:
    """The run-relative decoder of the `transfgu` column: the release schedule's final student, or round R."""
    cfg = config["transfgu"]
    return "transfgu/bootstrap/model.pt" if cfg["schedule"] == "release" else f"transfgu/round-{cfg['rounds']}/model.pt"
