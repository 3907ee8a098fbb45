"""Read a time-series classification file in the ``.ts`` format of the UCR/UEA archives.

The format (sktime's and aeon's): ``#`` comment lines, ``@key value`` header lines
(``@problemName``, ``@univariate``, ``@equalLength``, ``@seriesLength``, ``@classLabel true
A B ...``), then ``@data`` and one series per line, its values separated by commas and its
class label after the last colon: ``0.1,0.5,-0.2:A``. This reader takes what the built-in
tasks need, univariate, equal-length, labelled series without timestamps or missing values,
in a few lines of numpy, without importing aeon (which pulls in numba and takes seconds).
Anything else is refused with one line naming the file, the line and what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fairtrial.errors import TaskError

__all__ = ["TsFile", "read_ts"]


@dataclass(frozen=True)
class TsFile:
    """The series of a ``.ts`` file: ``x`` float64 (series, length), ``labels`` as written,
    and ``classes``, the labels the header declares, in its order."""

    problem: str
    x: NDArray[np.float64]
    labels: tuple[str, ...]
    classes: tuple[str, ...]

    def y(self) -> NDArray[np.int64]:
        """The labels as class numbers 0..k-1, in the order the header declares them."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.fromiter((index[label] for label in self.labels), np.int64, len(self.labels))


def _flag(value: str, path: Path, lineno: int, key: str) -> bool:
    low = value.strip().lower()
    if low not in ("true", "false"):
        raise TaskError(f"{path}:{lineno}: @{key} must be true or false, got {value.strip()!r}")
    return low == "true"


def read_ts(path: Path) -> TsFile:
    """Parse ``path``, a univariate, equal-length, labelled ``.ts`` file (raises TaskError)."""
    header: dict[str, tuple[str, int]] = {}  # key -> (value, line number)
    classes: tuple[str, ...] = ()
    rows: list[str] = []
    labels: list[str] = []
    lengths: set[int] = set()
    in_data = False
    first_data = 0
    with open(path, encoding="utf-8") as text:
        for lineno, raw in enumerate(text, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise TaskError(
                        f"{path}:{lineno}: expected a '@key value' header line or @data"
                    )
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data, first_data = True, lineno + 1
                elif key == "classlabel":
                    flag, *names = value.split()
                    if not _flag(flag, path, lineno, "classLabel") or not names:
                        raise TaskError(f"{path}:{lineno}: the series must be labelled ({line})")
                    classes = tuple(names)
                else:
                    header[key] = (value.strip(), lineno)
                continue
            values, sep, label = line.rpartition(":")
            if not sep or ":" in values:
                raise TaskError(
                    f"{path}:{lineno}: expected one univariate series, 'v1,v2,...:label'"
                )
            label = label.strip()
            if label not in classes:
                raise TaskError(
                    f"{path}:{lineno}: label {label!r} is not one the header declares "
                    f"({', '.join(classes) or 'none'})"
                )
            rows.append(values)
            labels.append(label)
            lengths.add(values.count(",") + 1)
    if not in_data:
        raise TaskError(f"{path}: no @data line")
    for key, want in (("univariate", True), ("equallength", True), ("timestamps", False)):
        value, lineno = header.get(key, ("", 0))
        if value and _flag(value, path, lineno, key) != want:
            raise TaskError(
                f"{path}:{lineno}: @{key} is {value}; only univariate, equal-length series "
                "without timestamps are read"
            )
    if not rows:
        raise TaskError(f"{path}: @data holds no series")
    if len(lengths) != 1:
        raise TaskError(f"{path}: series of different lengths {sorted(lengths)}; expected one")
    (length,) = lengths
    declared, lineno = header.get("serieslength", ("", 0))
    if declared and declared != str(length):
        raise TaskError(
            f"{path}:{lineno}: @seriesLength is {declared} but the series hold {length} values"
        )
    try:
        x = np.array([row.split(",") for row in rows], dtype=np.float64)
    except ValueError:
        what = (
            "missing values ('?')"
            if any("?" in row for row in rows)
            else "a value that is not a number"
        )
        raise TaskError(f"{path}: the series from line {first_data} on hold {what}") from None
    if not np.all(np.isfinite(x)):
        raise TaskError(f"{path}: the series hold missing or infinite values; expected none")
    return TsFile(header.get("problemname", (path.stem, 0))[0], x, tuple(labels), classes)
