"""What the analyses write: CSV tables, text/JSON and PNG plots, each file atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from yapo_bench.atomic import atomic_file

REPORT_ROOT = Path("reports/analysis")  # where `yapo-bench analyze <name>` writes by default


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt
