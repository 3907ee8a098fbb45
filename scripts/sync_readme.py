"""Regenerate the README's recipe-options section from the recipes' own dataclasses.

Usage: .venv/bin/python scripts/sync_readme.py   (tests/test_docs.py fails when it is stale)
"""

from __future__ import annotations

import re
from pathlib import Path

from fairtrial.recipes import options_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- recipes:start -->", "<!-- recipes:end -->"


def synced(text: str) -> str:
    body = f"{START}\n\n{options_markdown().strip()}\n\n{END}"
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: body, text, flags=re.S)


if __name__ == "__main__":
    README.write_text(synced(README.read_text()))
