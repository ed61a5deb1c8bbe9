"""The fixed ImageNet-S test set as the official evaluator reads it, and useg's figures on it.

Writes the 43 images of `tests/imagenet_s_fixture.py` (50 classes + background) to `--files`:
`gt/n0/img_NN.png` (ground truth) and `pred/n0/img_NN.png` (raw labels), both R + 256 G, the
name list `names.txt` in the official format, and one matching JSON ({label: class}, as the
official match.py writes it) per matching: `match-hidden.json` (the set's own permutation) and
`match-useg.json` (useg's co-occurrence matching). Saves useg's figures under each matching in
the official evaluator's names and scale (percent), so they compare line by line with its summary
table. The official evaluator (github.com/LUSSeg/ImageNet-S; on a CPU without `.cuda()`, and on
NumPy 2 with the PNG channels cast to int64 before `* 256`) scores the same files from its
`evaluation/` folder with

    python -c "from tools import get_loader; from evaluator import evaluator; \
        print(evaluator(get_loader('FILES/pred', 'FILES/gt', 'FILES/names.txt', match='FILES/match-useg.json', workers=0), 50))"

    python benchmarks/imagenet_s_official.py --files /tmp/imagenet-s-fixed --out benchmarks/results/imagenet_s_official.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT.parent)]
from common import save  # noqa: E402

from tests.imagenet_s_fixture import IGNORE, NUM_CLASSES, fixed_set, inverse  # noqa: E402
from useg.data.labels import encode_rg  # noqa: E402
from useg.eval.imagenet_s import SIZE_BUCKETS, ImageNetSEvaluator  # noqa: E402


def write_files(pairs: list[tuple[np.ndarray, np.ndarray]], folder: Path) -> None:
    """Ground truth, raw predictions and the name list, laid out as the official loader reads them."""
    names = []
    for n, (gt, pred) in enumerate(pairs):
        name = f"n0/img_{n:02d}"
        for sub, ids in (("gt", gt), ("pred", pred)):
            (folder / sub / "n0").mkdir(parents=True, exist_ok=True)
            Image.fromarray(encode_rg(ids)).save(folder / sub / f"{name}.png")
        names.append(f"{name}.JPEG {name}.png")
    (folder / "names.txt").write_text("\n".join(names) + "\n")


def official_names(result: dict) -> dict[str, float | None]:
    """useg's figures under the official evaluator's summary names, in percent."""
    figures = {"Acc": result["image_accuracy"], "mIoU": result["miou"], "mBIoU": result["boundary_miou"]}
    figures |= {b: result["miou_by_size"][b] for b in SIZE_BUCKETS}
    figures |= {f"B{b}": result["boundary_miou_by_size"][b] for b in SIZE_BUCKETS}
    figures["FMeasure"] = result["f_measure"]
    return {k: (None if v is None else 100 * v) for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=Path, required=True, help="folder for the PNGs, name list and matchings")
    parser.add_argument("--out", default="benchmarks/results/imagenet_s_official.json")
    args = parser.parse_args()
    pairs, label_of = fixed_set()
    write_files(pairs, args.files)
    ev = ImageNetSEvaluator(NUM_CLASSES + 1, NUM_CLASSES + 1, ignore=IGNORE)
    for gt, pred in pairs:
        ev.add(gt, pred)
    names = [f"c{i}" for i in range(NUM_CLASSES + 1)]
    own = ev.result(names)
    out = {"images": len(pairs), "classes": NUM_CLASSES, "matching_ties": own["matching_ties"]}
    for name, mapping in (("hidden", inverse(label_of)), ("useg", np.array(list(own["matching_ids"].values())))):
        (args.files / f"match-{name}.json").write_text(json.dumps({str(k): int(v) for k, v in enumerate(mapping)}))
        out[name] = official_names(ev.result(names, mapping))
    save(out, args.out)


if __name__ == "__main__":
    main()
