"""The report on a tiny DAG run: figures and tables as report() outputs, report.html written by Snakemake's own
`--report ... --report-after-run` on the run, every figure embedded once; the page checked in headless
Chromium at 1400x900 (marker `browser`): the comparison table on the first screen, every figure decodes."""

from __future__ import annotations

import base64
import csv
import html as html_module
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

VIEWPORT = (1400, 900)

# Appended to a copy of report.html: after the page has rendered, where the front page's title and first
# table are (at scroll position 0), which images fail to decode (those on the page and every image result
# of the report, from its embedded data URI), and where each figure lands when the report shows it.
PAGE_PROBE = """
<img alt="probe-broken" src="data:image/png;base64,AAAA" style="display:none">
<script>
function loads(src) {
  return new Promise(done => { const i = new Image(); i.onload = () => done(i.naturalWidth > 0); i.onerror = () => done(false); i.src = src; });
}
window.addEventListener("load", () => setTimeout(async () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60));
  const figures = Object.entries(results).filter(([path, r]) => r.mime_type.startsWith("image/"));
  const decoded = await Promise.all(figures.map(([path, r]) => loads(r.data_uri)));
  const table = document.querySelector("#app .prose table"), title = document.querySelector("#app .prose h1");
  const front = {table: table && table.getBoundingClientRect().toJSON(), title: title && title.getBoundingClientRect().toJSON(),
                 caption: table && table.querySelector("caption") && table.querySelector("caption").textContent};
  const shown = [];  // each figure as the report shows it when clicked: where it lands in the window
  for (const [path, r] of figures) {
    app.setView({content: "img", contentPath: r.data_uri});
    await new Promise(done => setTimeout(done, 300));
    const img = Array.from(document.images).find(i => i.src === r.data_uri);
    shown.push({path: path, rect: img && img.getBoundingClientRect().toJSON()});
  }
  const out = document.createElement("pre");
  out.id = "page-check";
  out.textContent = JSON.stringify({
    images: images.length, broken: broken, figures: figures.map(([path, r]) => path),
    undecoded: figures.filter((f, k) => !decoded[k]).map(([path, r]) => path),
    ...front, shown: shown, viewport: [window.innerWidth, window.innerHeight],
  });
  document.body.appendChild(out);
}, 2000));
</script>
"""


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny run with the report on, report.html written by Snakemake after the run: its workdir and stdout."""
    workdir = tmp_path_factory.mktemp("report")
    html = workdir / OUT / "report.html"
    result = check(run_snakemake(workdir, CONFIG, "--report", str(html), "--report-after-run"))
    return workdir, result.stdout + result.stderr


def test_run_writes_figures_tables_and_report_with_every_figure_once(report_run: tuple[Path, str]):
    workdir, output = report_run
    html = workdir / OUT / "report.html"
    assert f"report: snakemake --report {OUT}/report.html --configfile {workdir / 'test-config.yaml'}" in output
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
    assert re.search(r"kmeans\s+hungarian\s+miou\s+paper  50\.00   ours", output), "the summary prints the paper's figures"
    chart = np.asarray(Image.open(workdir / OUT / "kmeans/report/iou.png"))
    assert chart.ndim == 3 and chart.std() > 0
    overlays = Image.open(workdir / OUT / "report/overlays.jpg")
    assert overlays.format == "JPEG" and np.asarray(overlays).std() > 0
    per_class = (workdir / OUT / "report/per-class-iou.html").read_text()
    assert "<h2>hungarian</h2>" in per_class and "<th>kmeans</th>" in per_class
    page = html.read_text()
    assert "useg results: tiny" in page and "per-class-iou.html" in page
    for figure in (workdir / OUT / "kmeans/report/iou.png", workdir / OUT / "report/overlays.jpg"):
        data = base64.b64encode(figure.read_bytes()).decode()
        assert page.count(data) == 1, f"{figure.name} is embedded once"
    front = (workdir / OUT / "report/overview.rst").read_text()
    assert "data:image" not in front and front.index(".. list-table:: hungarian") < front.index(".. list-table:: per-image")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.browser
def test_report_shows_the_table_on_the_first_screen_and_every_figure_loads(report_run: tuple[Path, str], tmp_path: Path):
    browser = find_browser()
    if browser is None:
        reason = "no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("USEG_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    workdir, _ = report_run
    page = tmp_path / "report.html"
    head, tag, tail = (workdir / OUT / "report.html").read_text().rpartition("</body>")  # the page's own, not one in its scripts
    page.write_text(head + PAGE_PROBE + tag + tail)
    size = f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=20000", size]
    shot = tmp_path / "report.png"
    front_page = (workdir / OUT / "report.html").as_uri()  # as it opens, before the probe changes the view
    subprocess.run([*flags, f"--screenshot={shot}", front_page], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180, check=True).stdout
    found = re.search(r'<pre id="page-check">(.*?)</pre>', dom, re.S)
    assert found, "the page finished rendering"
    probe = json.loads(html_module.unescape(found.group(1)))
    assert probe["viewport"][0] == VIEWPORT[0], "the window is 1400 px wide (its height less the browser frame)"
    assert probe["caption"].startswith("hungarian"), "the first table is the hungarian one"
    assert 0 <= probe["title"]["top"] and probe["title"]["top"] < probe["table"]["top"], "the title is not cut off above"
    assert probe["table"]["top"] < probe["viewport"][1] - 60, "the comparison table starts on the first screen"
    assert probe["broken"] == ["probe-broken"], "only the deliberately broken probe image fails to load"
    assert len(probe["figures"]) == 2 and probe["undecoded"] == [], "the IoU chart and the overlays decode"
    for figure in probe["shown"]:
        assert figure["rect"]["top"] >= 0 and figure["rect"]["left"] >= 0, f"{figure['path']} is shown from its top-left corner"
    screenshot = np.asarray(Image.open(shot).convert("RGB"))
    assert screenshot.shape[:2] == (VIEWPORT[1], VIEWPORT[0]) and len(np.unique(screenshot.reshape(-1, 3), axis=0)) > 50
