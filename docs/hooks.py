"""mkdocs hooks: the performance page includes ``benchmarks/results/latest.md`` and its plot.

The tables are read at build time, so the docs always show the last ``make bench`` run.
"""

from __future__ import annotations

import os
import re
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
MARKER = "<!-- make bench: latest.md -->"
PLOT = "read_gbps.png"


def _latest() -> str:
    """latest.md without its title, headings one level down, work history wording removed."""
    with open(os.path.join(RESULTS, "latest.md"), encoding="utf-8") as f:
        text = f.read()
    text = text.split("\n", 1)[1]  # drop "# sharedzarr benchmarks"
    text = re.sub(r"^(#+) ", r"#\1 ", text, flags=re.M)
    text = re.sub(r" \(issue \d+(, section \d+)?\)", "", text)
    return text


def on_files(files: Any, config: Any) -> Any:
    """Publish the benchmark plot as ``img/read_gbps.png``."""
    from mkdocs.structure.files import File

    src = os.path.join(RESULTS, PLOT)
    if os.path.exists(src):
        files.append(File.generated(config, f"img/{PLOT}", abs_src_path=src))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker on the performance page with the latest benchmark tables."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, _latest())
    return markdown
