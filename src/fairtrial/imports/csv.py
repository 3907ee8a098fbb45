"""Per-seed results from a CSV file in long format: one row per (task, arm, seed).

The header row comes first and names the columns: ``arm``, ``seed`` and ``value`` are needed,
``task`` and ``metric`` are optional (a file with several metrics needs ``--metric`` to pick
one). Every unusable row is a one-line :class:`~fairtrial.errors.ImportedDataError` naming the
file, the row (as a spreadsheet numbers it: the header is row 1) and the column, and what
would be valid. Row order means nothing: arms are paired by the seed's value.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from fairtrial.errors import ImportedDataError
from fairtrial.imports.table import NO_TASK, ImportedResults, Row, _clip, _listed, _seed

NEEDED = ("arm", "seed", "value")
OPTIONAL = ("task", "metric")


def read_csv(path: str | Path, *, metric: str | None = None) -> ImportedResults:
    """The results in the CSV file at ``path``; ``metric`` picks the rows of one metric when
    the file has a ``metric`` column (and names the values when it has none)."""
    where = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = _rows(fh)
    except FileNotFoundError:
        raise ImportedDataError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ImportedDataError(
            f"{where}: a folder; a folder of TensorBoard runs needs --from tensorboard"
        ) from None
    except UnicodeDecodeError as exc:
        raise ImportedDataError(
            f"{where}: not UTF-8 text (byte {exc.start}): save the table as a UTF-8 CSV file"
        ) from None
    except csv.Error as exc:
        raise ImportedDataError(f"{where}: not a readable CSV file: {exc}") from None
    if not rows:
        raise ImportedDataError(
            f"{where}: no header row; the first row names the columns "
            f"({', '.join(NEEDED)}; optional: {', '.join(OPTIONAL)})"
        )
    header_line, header = rows[0]
    columns = [h.strip() for h in header]
    for name in dict.fromkeys(columns):
        if columns.count(name) > 1 and name in NEEDED + OPTIONAL:
            raise ImportedDataError(f"{where}, row {header_line}: the column '{name}' twice")
    missing = [c for c in NEEDED if c not in columns]
    if missing:
        raise ImportedDataError(
            f"{where}, row {header_line}: no column '{missing[0]}' (the header has: "
            f"{_listed(columns) or 'nothing'}; needed: {', '.join(NEEDED)}; optional: "
            f"{', '.join(OPTIONAL)})"
        )
    col = {name: columns.index(name) for name in NEEDED + OPTIONAL if name in columns}
    out: list[tuple[str | None, Row]] = []
    for line, cells in rows[1:]:
        if len(cells) != len(columns):
            raise ImportedDataError(
                f"{where}, row {line}: {len(cells)} field(s), the header has {len(columns)}"
            )

        def cell(name: str, line: int = line, cells: list[str] = cells) -> str:
            text = cells[col[name]].strip()
            if not text:
                raise ImportedDataError(f"{where}, row {line}, column '{name}': empty")
            return text

        task = cell("task") if "task" in col else NO_TASK
        seed = _seed(cell("seed"), f"{where}, row {line}, column 'seed'")
        out.append(
            (
                cell("metric") if "metric" in col else None,
                Row(task, cell("arm"), seed, _value(cell("value"), where, line), f"row {line}"),
            )
        )
    chosen = _metric(out, metric, where)
    return ImportedResults(
        rows=tuple(r for m, r in out if m is None or m == chosen),
        source=where,
        name=Path(path).stem,
        metric=chosen,
    )


def _rows(fh: Iterable[str]) -> list[tuple[int, list[str]]]:
    """(row number, cells) of every non-blank row."""
    reader = csv.reader(fh)
    out = []
    start = 1
    for cells in reader:
        if any(c.strip() for c in cells):
            out.append((start, cells))
        start = reader.line_num + 1
    return out


def _value(text: str, where: str, line: int) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ImportedDataError(
            f"{where}, row {line}, column 'value': '{_clip(text)}' is not a number (a finite "
            "number is needed, e.g. 0.93)"
        ) from None
    if not math.isfinite(v):
        raise ImportedDataError(
            f"{where}, row {line}, column 'value': {text} is not finite (a diverged run: leave "
            "its row out, or give it a finite score)"
        )
    return v


def _metric(rows: list[tuple[str | None, Row]], metric: str | None, where: str) -> str:
    """The metric the analysis is of: the file's only one, or the one ``metric`` picks."""
    named = sorted({m for m, _ in rows if m is not None})
    if not named:
        return metric or "value"
    if metric is None:
        if len(named) > 1:
            raise ImportedDataError(
                f"{where}, column 'metric': several metrics ({_listed(named)}); pick one with "
                "--metric"
            )
        return named[0]
    if metric not in named:
        raise ImportedDataError(
            f"{where}, column 'metric': no rows of metric '{metric}'; --metric is one of "
            f"{_listed(named)}"
        )
    return metric
