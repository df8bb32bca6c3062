"""A policy set as read from its files: the merged document, where each value came from, the problems found."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import PolicyIssue

Path_ = tuple[str | int, ...]


@dataclass
class Sources:
    """The merged raw document plus where each path came from (file, line)."""

    document: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[Path_, tuple[str, int | None]] = field(default_factory=dict)
    issues: list[PolicyIssue] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    files: list[str] = field(default_factory=list)

    def locate(self, path: Sequence[str | int]) -> tuple[str, int | None]:
        """The file and line of ``path``, or of its nearest located ancestor."""
        for depth in range(len(path), 0, -1):
            found = self.origins.get(tuple(path[:depth]))
            if found is not None:
                return found
        return (self.files[0] if self.files else "<policy>", None)

    def issue(self, path: Sequence[str | int], message: str) -> None:
        file, line = self.locate(path)
        self.issues.append(PolicyIssue(file, _dotted(path), message, line))


def _dotted(path: Sequence[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else (f".{part}" if i else part) for i, part in enumerate(path))
