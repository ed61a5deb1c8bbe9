"""The report on a tiny DAG run: figures and comparison table as report() outputs, report.html written
and its path printed at the end of the run; the page checked in headless Chromium (marker `browser`)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.integration.dag import check, run_snakemake, tiny_config

pytestmark = pytest.mark.integration

OUT = "results/tiny"
PAPER = {  # a preset's paper row: its figures are printed beside the run's
    "method": "kmeans", "paper": "A paper", "table": "Table 9", "row": "tiny",
    "results": [
        {"column": "kmeans", "protocol": "hungarian", "metric": "miou", "value": 50.0},
        {"column": "kmeans", "protocol": "alignseg", "metric": "miou", "value": 60.0},
    ],
}  # fmt: skip
CONFIG = tiny_config(
    dataset={"synthetic": {"num_train": 4, "num_val": 2, "image_size": 32}},
    features={"shards": 1, "batch_size": 4},
    report={"enabled": True, "images": 2},
    evaluate={"protocols": ["hungarian", "hungarian-iou", "alignseg"], "alignseg_size": 16},
    paper=PAPER,
)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# Appended to a copy of report.html: after the page has rendered, list every <img> that did not load.
IMAGE_PROBE = """
<img alt="probe-broken" src="data:image/png;base64,AAAA" style="display:none">
<script>
window.addEventListener("load", () => setTimeout(() => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60));
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken});
  document.body.appendChild(out);
}, 2000));
</script>
"""


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny run with the report on: its workdir and Snakemake's stdout."""
    workdir = tmp_path_factory.mktemp("report")
    result = check(run_snakemake(workdir, CONFIG))
    return workdir, result.stdout


def test_run_writes_figures_table_and_report_and_prints_its_path(report_run: tuple[Path, str]):
    workdir, stdout = report_run
    html = workdir / OUT / "report.html"
    assert f"report: {html}" in stdout
    rows = list(csv.DictReader((workdir / OUT / "report/comparison.csv").open()))
    metrics = json.loads((workdir / OUT / "kmeans/metrics.json").read_text())
    protocols = ["hungarian", "per-image", "hungarian-iou", "alignseg"]
    assert [(r["method"], r["protocol"]) for r in rows] == [("kmeans", p) for p in protocols]
    assert float(rows[0]["mIoU"]) == pytest.approx(100 * metrics["protocols"]["hungarian"]["miou"])
    assert metrics["protocols"]["alignseg"]["size"] == 16 and metrics["protocols"]["alignseg"]["comparable"] is False
    table = (workdir / OUT / "report/comparison.md").read_text()
    assert "| kmeans | hungarian |" in table
    ours = 100 * metrics["protocols"]["alignseg"]["miou"]
    assert f"| kmeans | alignseg | miou | 60.00 | {ours:.2f} | {ours - 60:+.2f} | Table 9 |" in table
    assert re.search(r"kmeans\s+hungarian\s+miou\s+paper  50\.00   ours", stdout), "the summary prints the paper's figures"
    for figure in ("iou", "overlays"):
        image = np.asarray(Image.open(workdir / OUT / f"kmeans/report/{figure}.png"))
        assert image.ndim == 3 and image.std() > 0
    page = html.read_text()
    assert "comparison.csv" in page and "overlays.png" in page and "useg results: tiny" in page


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.browser
def test_report_opens_in_a_browser_with_table_and_images(report_run: tuple[Path, str], tmp_path: Path):
    browser = find_browser()
    if browser is None:
        reason = "no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("USEG_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    workdir, _ = report_run
    page = tmp_path / "report.html"
    head, tag, tail = (workdir / OUT / "report.html").read_text().rpartition("</body>")  # the page's own, not one in its scripts
    page.write_text(head + IMAGE_PROBE + tag + tail)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--window-size=1280,1600"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180, check=True).stdout
    table = re.search(r'<table border="1" class="docutils">.*?</table>', dom, re.S)  # rendered, not the JS source
    assert table and "mIoU" in table.group(0) and "kmeans" in table.group(0), "the comparison table is on the front page"
    check_result = re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S)
    assert check_result, "the page finished rendering"
    images = json.loads(check_result.group(1).replace("&quot;", '"'))
    assert images["broken"] == ["probe-broken"], "only the deliberately broken probe image fails to load"
    assert images["images"] >= 3, "the IoU chart and the overlay grid are on the page"
    screenshot = np.asarray(Image.open(shot).convert("RGB"))
    assert screenshot.shape[:2] == (1600, 1280) and len(np.unique(screenshot.reshape(-1, 3), axis=0)) > 50
