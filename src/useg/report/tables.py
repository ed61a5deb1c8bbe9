"""The comparison table across methods (one row per method x protocol) as Markdown, CSV and reStructuredText."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

BASELINE = "kmeans"
COLUMNS = ("method", "protocol", "mIoU", "pixel acc", "vs baseline", "supervised", "clusters", "images")


def comparison_rows(metrics_paths: list[str | Path]) -> list[dict[str, Any]]:
    """One row per (method, protocol) of every metrics.json; `vs baseline`: mIoU minus the kmeans
    baseline's under the same protocol (points), when the baseline ran."""
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
                }
            )
    baseline = {r["protocol"]: r["mIoU"] for r in rows if r["method"] == BASELINE}
    for row in rows:
        ref = baseline.get(row["protocol"])
        row["vs baseline"] = None if ref is None or row["method"] == BASELINE else row["mIoU"] - ref
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


def to_rst_table(rows: list[dict[str, Any]]) -> str:
    """reStructuredText list-table."""
    lines = [".. list-table:: Methods compared (mIoU and pixel accuracy in %)", "   :header-rows: 1", ""]
    for cells in [list(COLUMNS)] + [[_cell(r, c) for c in COLUMNS] for r in rows]:
        lines.append("   * - " + (cells[0] or " "))
        lines += [f"     - {c or ' '}" for c in cells[1:]]
    return "\n".join(lines) + "\n"


def _embedded_image(path: Path, title: str) -> str:
    """An image inlined as a data URI in raw HTML, broken into short lines (docutils limits line length;
    URL parsing drops the newlines)."""
    data = base64.b64encode(path.read_bytes()).decode()
    lines = [data[i : i + 76] for i in range(0, len(data), 76)]
    body = "\n".join(f"   {line}" for line in lines)
    return (
        f"**{title}**\n\n.. raw:: html\n\n"
        f'   <img alt="{title}" style="max-width: 100%" src="data:image/png;base64,\n{body}\n   ">\n'
    )


def paper_rst(paper: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The paper-figure rows as a reStructuredText list-table."""
    title = f"{paper['paper']}, {paper['table']}, {paper['row']}: published figures beside this run's (%)"
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for cells in [list(PAPER_COLUMNS)] + [[_cell(r, c) for c in PAPER_COLUMNS] for r in rows]:
        lines.append("   * - " + (cells[0] or " "))
        lines += [f"     - {c or ' '}" for c in cells[1:]]
    return "\n".join(lines) + "\n"


def overview_rst(
    rows: list[dict[str, Any]], figures: list[Path], root: Path, dataset: str, paper: dict[str, Any] | None = None
) -> str:
    """The report's front page: comparison table (and a preset's paper figures), then every figure embedded."""
    parts = [
        f"useg results: {dataset}\n{'=' * (14 + len(dataset))}\n",
        "Every method evaluated on the evaluation split, one row per method and protocol "
        f"(``{BASELINE}`` is the baseline; *vs baseline*: mIoU difference in points under the same protocol; "
        "supervised rows are upper bounds, not unsupervised results). Per-method figures follow; "
        "the result categories on the left hold the same figures and tables as files.\n",
        to_rst_table(rows),
        *([paper_rst(paper, paper_rows(paper, root))] if paper else []),
    ]
    for figure in figures:
        relative = figure.relative_to(root) if figure.is_relative_to(root) else figure
        parts.append(_embedded_image(figure, str(relative)))
    return "\n".join(parts)
