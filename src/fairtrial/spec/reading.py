"""Reading a spec file and parsing its TOML: the file must be a regular UTF-8 file of at most
:data:`~fairtrial.spec.MAX_SPEC_BYTES` (a pipe or a device is refused before it can block),
the TOML must parse, and no value anywhere may be one no store or bundle can hold (nested too
deep, a date, a 65-bit integer, a NUL, a non-finite config number). :class:`_Loader` turns a
table's validation error into the one located line the user sees.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
import stat
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fairtrial.errors import SpecError
from fairtrial.spec.errors import _clip, _line_of, _show, spec_error
from fairtrial.spec.limits import (
    _INT64,
    _KEY_PART,
    MAX_CONFIG_VALUES,
    MAX_DEPTH,
    MAX_KEY,
    MAX_SPEC_BYTES,
)
from fairtrial.spec.tables import _VALID

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class _Loader:
    def __init__(self, text: str, path: Path | None) -> None:
        self.text = text
        self.path = path
        self.label = str(path) if path is not None else "<spec>"

    def fail(self, table: str | None, key: str | None, message: str) -> SpecError:
        line = _line_of(self.text, table, key.split(" ")[0] if key else None) if table else None
        where = f"{self.label}:{line}" if line else self.label
        what = f"[{_clip(table)}]" if table else ""
        if key:
            what = f"{what} {_clip(key, 120)}" if what else _clip(key, 120)
        return spec_error(f"{where}: {what}: {message}" if what else f"{where}: {message}")

    def unknown(self, table: str | None, key: str, valid: list[str]) -> SpecError:
        hint = difflib.get_close_matches(key, valid, n=1)
        did = f" (did you mean '{hint[0]}'?)" if hint else ""
        return self.fail(
            table,
            _clip(key) or '""',
            f"unknown key{did}; valid: {', '.join(valid) if valid else 'none'}",
        )

    def model(self, cls: type[BaseModel], table: str, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            raise self.fail(None, None, f"'{table}' must be a table ([{table}])")
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            errors = exc.errors()
            # a misspelt key also shows up as a missing one: name the misspelling first
            err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
            key = str(err["loc"][0]) if err["loc"] else None
            if err["type"] == "extra_forbidden" and key is not None:
                raise self.unknown(table, key, list(cls.model_fields)) from None
            if err["type"] == "missing" and key:
                raise self.fail(
                    table, None, f"missing required key '{key}' ({_VALID[key]})"
                ) from None
            got = raw.get(key) if key else None
            if err["type"] == "value_error":
                msg = str(err["msg"]).removeprefix("Value error, ")
            else:
                msg = f"must be {_VALID.get(key or '', 'valid')}"
            shown = f" = {_show(got)}" if key and key in raw else ""
            raise self.fail(table, f"{key}{shown}" if key else None, msg) from None


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_SIZE_RULE = f"a spec is a regular file of at most {MAX_SPEC_BYTES // 1024 // 1024} MiB"


def _not_regular(p: Path, mode: int) -> SpecError | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return spec_error(f"{p}: is {kind}, not a spec file; {_SIZE_RULE}")


def _too_big(p: Path, size: int | None) -> SpecError:
    """``size``: from stat; None: the file grew past the limit while it was read."""
    what = f"{size} bytes" if size is not None else f"more than {MAX_SPEC_BYTES} bytes"
    return spec_error(f"{p}: is {what}; {_SIZE_RULE} ({MAX_SPEC_BYTES} bytes)")


def read_spec_text(path: str | Path) -> str:
    """The text of spec file ``path``: a regular file of at most :data:`MAX_SPEC_BYTES`, UTF-8.

    A pipe or a device would block or never end: the file is checked before it is opened,
    opened without blocking and checked again (it may have been swapped), and read no further
    than one byte past the limit (it may be growing).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise spec_error(f"{p}: no such spec file") from None
    except (OSError, ValueError) as exc:
        raise spec_error(f"{p}: cannot read spec file ({exc})") from None
    if (problem := _not_regular(p, st.st_mode)) is not None:
        raise problem
    if st.st_size > MAX_SPEC_BYTES:
        raise _too_big(p, st.st_size)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise spec_error(f"{p}: no such spec file") from None
    except OSError as exc:
        raise spec_error(f"{p}: cannot read spec file ({exc})") from None
    try:
        if (problem := _not_regular(p, os.fstat(fd).st_mode)) is not None:
            raise problem
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SPEC_BYTES and (chunk := os.read(fd, MAX_SPEC_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise spec_error(f"{p}: cannot read spec file ({exc})") from None
    finally:
        os.close(fd)
    if size > MAX_SPEC_BYTES:
        raise _too_big(p, None)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise spec_error(f"{p}: cannot read spec file ({exc}); a spec is UTF-8 text") from None


def _parse_toml(text: str, ld: _Loader) -> dict[str, Any]:
    # characters take one to four bytes: more characters than the limit is too big already
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise spec_error(f"{ld.label}: is more than {MAX_SPEC_BYTES} bytes; {_SIZE_RULE}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        where = f"{ld.label}:{m.group(1)}" if m else ld.label
        raise spec_error(f"{where}: invalid TOML: {exc}") from None
    except RecursionError:  # the parser recurses once per nested table or list
        raise spec_error(
            f"{ld.label}: invalid TOML: tables or lists nested too deeply; "
            f"a spec nests at most {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:  # Python reads no integer of more than 4300 digits
        why = (
            "a number too long to read; TOML integers are 64-bit (from -2^63 to 2^63-1)"
            if "digits" in str(exc)
            else str(exc)
        )
        raise spec_error(f"{ld.label}: invalid TOML: {why}") from None


def _walk(
    value: Any, path: tuple[str, ...] = (), in_list: bool = False, depth: int = 0
) -> Iterator[tuple[tuple[str, ...], Any, bool, int]]:
    """(keys, value, inside a list, depth) of ``value`` and of everything inside it; nothing
    below :data:`MAX_DEPTH` (the caller refuses what is that deep)."""
    yield path, value, in_list, depth
    if depth > MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, (*path, str(k)), in_list, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, path, True, depth + 1)


def _check_document(ld: _Loader, raw: Mapping[str, Any]) -> None:
    """What no value anywhere may be: nested too deep, a date, a 65-bit integer, a NUL; and in
    [baseline] and [arms.*], keys a recipe and a command can use and numbers that are finite."""
    for path, value, in_list, depth in _walk(raw):
        if not path:
            continue
        if path[0] == "arms" and len(path) > 1:
            table, keys = f"arms.{path[1]}", path[2:]
        else:
            table, keys = path[0], path[1:]
        key = ".".join(keys)
        config = path[0] in ("baseline", "arms") and bool(keys)
        if depth > MAX_DEPTH:
            raise ld.fail(table, _clip(key) or None, f"nested more than {MAX_DEPTH} levels deep")
        if any("\x00" in k for k in path):
            raise ld.fail(table, _clip(key) or None, "a key contains a NUL character (\\x00)")
        if isinstance(value, (datetime.date, datetime.time)):
            valid = _VALID.get(
                keys[-1] if keys else "", "a string, a number, true or false, a list or a table"
            )
            raise ld.fail(
                table,
                f"{_clip(key)} = {_show(value)}",
                f"a TOML date or time is not a valid value; valid: {valid} "
                '(to pass a date as text, quote it: "1979-05-27")',
            )
        if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            raise ld.fail(
                table,
                f"{_clip(key)} = {_show(value)}",
                "is outside the 64-bit integers TOML allows (from -2^63 to 2^63-1)",
            )
        if isinstance(value, str) and "\x00" in value:
            raise ld.fail(table, _clip(key) or None, "contains a NUL character (\\x00)")
        if not config:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ld.fail(
                table,
                f"{_clip(key)} = {value}",
                "must be a finite number: nan and inf equal no value, so arms holding them "
                "cannot be compared, and no report or bundle can store them",
            )
        if not in_list and (len(key) > MAX_KEY or not all(_KEY_PART.match(k) for k in keys)):
            raise ld.fail(
                table,
                _clip(key),
                "a config key is letters, digits, '_' and '-', starting with a letter or '_' "
                f"(nested keys joined by '.'), at most {MAX_KEY} characters in all",
            )
    baseline = raw.get("baseline")
    if isinstance(baseline, Mapping):
        count = sum(1 for _, v, _, _ in _walk(baseline) if not isinstance(v, (Mapping, list)))
        if count > MAX_CONFIG_VALUES:
            raise ld.fail(
                "baseline",
                None,
                f"holds {count} values; a config holds at most {MAX_CONFIG_VALUES}",
            )
