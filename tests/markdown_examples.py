"""Code blocks of the README and docs/ as runnable examples (used by ``tests/test_docs.py``).

A page's blocks run in order in one scratch folder, so later commands see earlier files:

- a fenced block whose info string has ``title="path"`` (mkdocs-material's file title) is written to
  that path, relative to the scratch folder (a suite file, a models module);
- a ``bash`` block runs with ``bash -euo pipefail``, ``harness`` on ``PATH``;
- a ``python`` block without a title runs as a script;
- ``text``, ``console``, ``yaml`` without a title and other blocks are shown, not run.

``<!-- example: skip REASON -->`` on the line before a block leaves it out, with the reason in the
test's output; ``<!-- example: slow -->`` anywhere in a page marks the whole page slow.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import List, Optional

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^\n`]*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
DIRECTIVE = re.compile(r"<!--\s*example:\s*(?P<what>skip|slow)\b\s*(?P<reason>.*?)\s*-->")


@dataclasses.dataclass
class Block:
    """One fenced block of a Markdown page."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    title: Optional[str]
    text: str
    skip: Optional[str] = None  # the reason, when the page says to leave it out

    @property
    def runs(self) -> bool:
        """Whether the block is executed (a command or a script) rather than written or shown."""
        return self.title is None and self.language in ("bash", "python") and self.skip is None

    @property
    def where(self) -> str:
        """``page:line`` for messages."""
        return f"{self.page.name}:{self.line}"


def read_blocks(page: Path) -> List[Block]:
    """Every fenced block of ``page``, in order, with its language, title and skip directive."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: List[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        info = opening.group("info").strip()
        indent = len(opening.group("indent"))
        closing = opening.group("fence")
        body: List[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != closing:
            body.append(lines[end][indent:])
            end += 1
        title = TITLE.search(info)
        previous = lines[index - 1] if index else ""
        directive = DIRECTIVE.search(previous)
        skip = None
        if directive and directive.group("what") == "skip":
            skip = directive.group("reason") or "no reason given"
        blocks.append(
            Block(
                page=page,
                line=index + 1,
                language=(info.split() or [""])[0].lower(),
                title=title.group("title") if title else None,
                text="\n".join(body) + "\n",
                skip=skip,
            )
        )
        index = end + 1
    return blocks


def is_slow(page: Path) -> bool:
    """Whether the page marks itself slow (``<!-- example: slow -->``)."""
    return any(m.group("what") == "slow" for m in DIRECTIVE.finditer(page.read_text("utf-8")))
