"""The comparison across methods: rows per method x protocol (Markdown, CSV), the report's front page
(reStructuredText: one table per protocol, hungarian first, the best in bold), the per-class IoU table
across methods (HTML) and the time and memory per stage from Snakemake's benchmark files."""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BASELINE = "kmeans"
FIRST_PROTOCOL = "hungarian"
COLUMNS = ("method", "protocol", "mIoU", "pixel acc", "vs baseline", "supervised", "clusters", "images")


def protocol_order(protocols: Sequence[str]) -> list[str]:
    """Protocols in the order first seen, `hungarian` (the standard) first."""
    return sorted(dict.fromkeys(protocols), key=lambda name: name != FIRST_PROTOCOL)


def comparison_rows(metrics_paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per (method, protocol) of every metrics.json, grouped by protocol (hungarian first, methods
    in the given order); `vs baseline`: mIoU minus the kmeans baseline's under the same protocol (points),
    only where the protocol is comparable across methods (not per-image matchings) and the baseline ran."""
    rows = []
    for path in metrics_paths:
        metrics = json.loads(Path(path).read_text())
        for protocol, result in metrics["protocols"].items():
            rows.append(
                {
                    "method": metrics["method"],
                    "protocol": protocol,
                    "mIoU": 100 * result["miou"],
                    "pixel acc": 100 * result["pixel_accuracy"],
                    "supervised": bool(metrics.get("supervised", False)),
                    "clusters": metrics["num_clusters"],
                    "images": metrics["num_images"],
                    "comparable": result.get("comparable", True),
                }
            )
    order = protocol_order([r["protocol"] for r in rows])
    rows.sort(key=lambda r: order.index(r["protocol"]))
    baseline = {r["protocol"]: r["mIoU"] for r in rows if r["method"] == BASELINE}
    for row in rows:
        ref = baseline.get(row["protocol"])
        comparable = ref is not None and row["comparable"] and row["method"] != BASELINE
        row["vs baseline"] = row["mIoU"] - ref if comparable else None
    return rows


PAPER_COLUMNS = ("column", "protocol", "metric", "paper", "ours", "difference", "table")


def published_value(root: Path, result: dict[str, Any]) -> float | None:
    """The run's own figure (%) for one entry of a preset's `paper.results`, None when it is not there (yet)."""
    path = root / result["column"] / result.get("file", "metrics.json")
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if result.get("file") == "ap.json":
        block = data.get(result["protocol"], {}).get(result.get("setting", ""))
    else:
        block = data["protocols"].get(result["protocol"])
    value = block.get(result["metric"]) if block else None
    return None if value is None else 100 * value


def paper_rows(paper: dict[str, Any], root: str | Path) -> list[dict[str, Any]]:
    """Every published figure of a preset's paper row beside the run's own (in %, and ours - paper)."""
    rows = []
    for result in paper["results"]:
        ours = published_value(Path(root), result)
        metric = result["metric"] + (f" ({result['setting']})" if result.get("setting") else "")
        rows.append(
            {
                "column": result["column"],
                "protocol": result["protocol"],
                "metric": metric,
                "paper": result["value"],
                "ours": ours,
                "difference": None if ours is None else ours - result["value"],
                "table": result.get("table", paper["table"]),
            }
        )
    return rows


def paper_markdown(paper: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The paper-figure rows as a Markdown table under a heading naming the paper row."""
    head = f"\n**{paper['paper']}**, {paper['table']}, {paper['row']}: published figures beside this run's (%)\n\n"
    lines = ["| " + " | ".join(PAPER_COLUMNS) + " |", "|" + "|".join("---" for _ in PAPER_COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cell(r, c) for c in PAPER_COLUMNS) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if value is None:
        return "" if column == "vs baseline" else "-"
    if column in ("vs baseline", "difference"):
        return f"{value:+.2f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """GitHub-flavoured Markdown table (mIoU and pixel accuracy in %)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with full-precision numbers."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: ("" if r[c] is None else r[c]) for c in COLUMNS} for r in rows)
    return buffer.getvalue()


# What each protocol's table says (docs/evaluation.md); a protocol not listed is shown by its name.
PROTOCOL_NOTES = {
    "hungarian": "one dataset-level one-to-one matching of clusters to classes (the standard)",
    "overcluster": "many-to-one: each cluster to its majority class",
    "hungarian-discard": "TransFGU's rule: pixels of unmatched clusters left out",
    "hungarian-iou": "MaskDistill's: the matching maximises summed IoU",
    "per-image": "its own matching per image: not comparable to the dataset-level protocols",
    "alignseg": "AlignSeg's per-image protocol: not comparable to the dataset-level protocols",
    "imagenet-s": "image-level co-occurrence matching (ImageNet-S)",
    "linear-probe": "supervised linear probe: an upper bound, not an unsupervised result",
}

# Snakemake's template centres its start page in a flex box: a page taller than the window would begin
# above the top of the window, out of reach. Inside the front page's own HTML (mounted only with it),
# this style starts the page at the top and gives the text the width of its tables.
FRONT_PAGE_STYLE = """.. raw:: html

   <style>
   div.h-screen.items-center.justify-center { align-items: flex-start; justify-content: flex-start; }
   .prose.max-w-lg { max-width: 56rem; }
   .prose table { margin-top: 0.25em; margin-bottom: 1em; }
   </style>
"""


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def best_of(values: Sequence[float | None]) -> set[int]:
    """Positions of the largest finite value (all of them on a tie)."""
    finite = [v for v in values if _finite(v)]
    top = max(finite, default=None)
    return {i for i, v in enumerate(values) if top is not None and v == top}


def rst_table(title: str, header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A reStructuredText list-table (an empty cell kept as one space, a lone '-' escaped: not a bullet)."""
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for cells in [list(header), *body]:
        escaped = ["\\-" if c == "-" else c or " " for c in cells]
        lines.append("   * - " + escaped[0])
        lines += [f"     - {c}" for c in escaped[1:]]
    return "\n".join(lines) + "\n"


def _bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold and text not in ("", "-") else text


def protocol_table(protocol: str, rows: list[dict[str, Any]]) -> str:
    """One protocol's methods as a list-table: mIoU and pixel accuracy (the best of each in bold), the
    difference to the baseline where comparable, K."""
    with_delta = any(r["vs baseline"] is not None for r in rows)
    header = ["method", "mIoU", "pixel acc"] + ([f"vs {BASELINE}"] if with_delta else []) + ["K"]
    best_miou, best_acc = best_of([r["mIoU"] for r in rows]), best_of([r["pixel acc"] for r in rows])
    body = []
    for i, row in enumerate(rows):
        cells = [f"``{row['method']}``", _bold(_cell(row, "mIoU"), i in best_miou), _bold(_cell(row, "pixel acc"), i in best_acc)]
        cells += [_cell(row, "vs baseline")] if with_delta else []
        body.append(cells + [_cell(row, "clusters")])
    note = PROTOCOL_NOTES.get(protocol, "")
    return rst_table(f"{protocol} (%){f': {note}' if note else ''}", header, body)


def paper_rst(paper: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The paper-figure rows as a reStructuredText list-table."""
    title = f"{paper['paper']}, {paper['table']}, {paper['row']}: published figures beside this run's (%)"
    return rst_table(title, PAPER_COLUMNS, [[_cell(r, c) for c in PAPER_COLUMNS] for r in rows])


def what_ran(rows: list[dict[str, Any]], run: Mapping[str, Any]) -> str:
    """One paragraph: dataset, evaluation images, backbone and weights, methods, protocols."""
    images = sorted({r["images"] for r in rows})
    methods = ", ".join(f"``{m}``" for m in run.get("methods", []))
    protocols = protocol_order([r["protocol"] for r in rows])
    return (
        f"**{run.get('dataset', '')}** ({run.get('kind', '')}): {'/'.join(map(str, images))} evaluation images "
        f"(split ``{run.get('split', '')}``), backbone ``{run.get('backbone', '')}`` (weights ``{run.get('weights', '')}``). "
        f"Methods {methods}: {_count(len(dict.fromkeys(r['method'] for r in rows)), 'evaluated column')} under "
        f"{_count(len(protocols), 'protocol')}, one table each; best per table in bold; *vs {BASELINE}*: mIoU points "
        "over the baseline under the same protocol, only where the protocol is comparable.\n"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def overview_rst(
    rows: list[dict[str, Any]],
    run: Mapping[str, Any],
    categories: Sequence[str] = (),
    paper: dict[str, Any] | None = None,
    paper_figures: list[dict[str, Any]] | None = None,
    stages: list[dict[str, Any]] | None = None,
) -> str:
    """The report's front page: what ran, one comparison table per protocol (hungarian first), a preset's
    published figures, the time and memory per stage, and links to the result categories (figures live
    there only, so nothing is embedded twice)."""
    title = f"useg results: {run.get('dataset', '')}"
    parts = [FRONT_PAGE_STYLE, f"{title}\n{'=' * len(title)}\n", what_ran(rows, run)]
    for protocol in protocol_order([r["protocol"] for r in rows]):
        parts.append(protocol_table(protocol, [r for r in rows if r["protocol"] == protocol]))
    if paper:
        parts.append(paper_rst(paper, paper_figures or []))
    if stages:
        parts.append(stages_rst(stages))
    if categories:
        links = ", ".join(f"{name}_" for name in categories)
        parts.append(f"Figures and tables as files: {links} (left); Snakemake's job graph beside this page.\n")
    return "\n".join(parts)


def per_class_table(metrics: Sequence[Mapping[str, Any]], protocol: str) -> tuple[list[str], list[list[float | None]]]:
    """Per-class IoU under one protocol: class names and a row per class, a column per method (None: the
    method lacks the protocol or the class is in neither its predictions nor the ground truth)."""
    names = list(dict.fromkeys(name for m in metrics for name in m["class_names"]))
    blocks = [m["protocols"].get(protocol, {}).get("per_class_iou", {}) for m in metrics]
    return names, [[block.get(name) for block in blocks] for name in names]


def _html_number(value: float | None, bold: bool) -> str:
    text = "n/a" if not _finite(value) else f"{100 * value:.1f}"
    return f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>"


def per_class_html(metrics: Sequence[Mapping[str, Any]]) -> str:
    """A standalone HTML page: per protocol, per-class IoU (%) of every method scored under it side by side,
    each class's best in bold, mIoU in the last row."""
    protocols = protocol_order([p for m in metrics for p, block in m["protocols"].items() if "per_class_iou" in block])
    sections = []
    for protocol in protocols:
        scored = [m for m in metrics if "per_class_iou" in m["protocols"].get(protocol, {})]
        names, table = per_class_table(scored, protocol)
        head = "".join(f"<th>{html.escape(m['method'])}</th>" for m in scored)
        body = [
            f"<tr><th>{html.escape(name)}</th>" + "".join(_html_number(v, j in best_of(row)) for j, v in enumerate(row)) + "</tr>"
            for name, row in zip(names, table)
        ]
        mious = [m["protocols"][protocol]["miou"] for m in scored]
        body.append("<tr class=miou><th>mIoU</th>" + "".join(_html_number(v, j in best_of(mious)) for j, v in enumerate(mious)) + "</tr>")
        note = html.escape(PROTOCOL_NOTES.get(protocol, ""))
        sections.append(f"<h2>{html.escape(protocol)}</h2><p>{note}</p>\n<table><tr><th>class</th>{head}</tr>\n" + "\n".join(body) + "\n</table>")
    return PER_CLASS_PAGE.format(sections="\n".join(sections))


PER_CLASS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Per-class IoU across methods</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 12px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 16px; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }}
tr > th:first-child {{ text-align: left; }}
tr:first-child th {{ background: #f2f2f2; position: sticky; top: 0; }}
tr.miou {{ border-top: 2px solid #888; }}
h2 {{ font-size: 15px; margin: 12px 0 2px; }} p {{ margin: 0 0 6px; color: #555; }}
</style></head><body>
<h1 style="font-size: 17px">Per-class IoU across methods (%)</h1>
<p>Each class's best in bold; n/a: the class is in neither the method's predictions nor the ground truth.</p>
{sections}
</body></html>
"""

# Snakemake's benchmark file (one line per run of a job): wall-clock seconds `s`, peak resident memory
# `max_rss` (MB), and further columns this table does not use.
STAGE_COLUMNS = ("stage", "jobs", "total s", "longest s", "peak RSS MB")


def stage_rows(benchmarks: Mapping[str, Sequence[str | Path]]) -> list[dict[str, Any]]:
    """Time and memory per stage from its jobs' benchmark TSVs (stage name -> files): jobs, summed and
    longest wall-clock seconds, peak resident memory (the last line of a file: its latest run)."""
    rows = []
    for stage, paths in benchmarks.items():
        runs = [list(csv.DictReader(Path(p).open(), delimiter="\t"))[-1] for p in paths]
        seconds = [float(r["s"]) for r in runs]
        memory = [float(r["max_rss"]) for r in runs if r.get("max_rss") not in (None, "", "NA", "-")]
        rows.append(
            {"stage": stage, "jobs": len(runs), "total s": sum(seconds), "longest s": max(seconds, default=0.0),
             "peak RSS MB": max(memory, default=None)}
        )  # fmt: skip
    return sorted(rows, key=lambda r: -r["total s"])


def stages_rst(rows: list[dict[str, Any]]) -> str:
    """The stages' time and memory (slowest first) as a list-table."""
    body = [[f"``{r['stage']}``", str(r["jobs"]), f"{r['total s']:.1f}", f"{r['longest s']:.1f}", _cell(r, "peak RSS MB")] for r in rows]
    return rst_table("Time and memory per stage (Snakemake benchmark files)", STAGE_COLUMNS, body)
