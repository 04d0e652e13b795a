"""Reading the benchmarks' printed Markdown tables back in their smoke tests."""

from __future__ import annotations


def markdown_tables(out: str) -> list[list[list[str]]]:
    """Every Markdown table in ``out`` as rows of cells (header first, separator dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*out.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-:"):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables
