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
CONFIG = tiny_config(
    dataset={"synthetic": {"num_train": 4, "num_val": 2, "image_size": 32}},
    features={"shards": 1, "batch_size": 4},
    report={"enabled": True, "images": 2},
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
    assert [(r["method"], r["protocol"]) for r in rows] == [("kmeans", "hungarian"), ("kmeans", "per-image")]
    assert float(rows[0]["mIoU"]) == pytest.approx(100 * metrics["protocols"]["hungarian"]["miou"])
    assert "| kmeans | hungarian |" in (workdir / OUT / "report/comparison.md").read_text()
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
