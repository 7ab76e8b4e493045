"""Configuration errors: every problem at once, each with its key path, value, rule and source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the parameters."""

    path: tuple[str, ...]
    value: Any
    rule: str
    source: str | None = None

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def describe(self) -> str:
        where = f" [{self.source}]" if self.source else ""
        return f"{self.key} = {self.value!r}: {self.rule}{where}"


class ConfigError(ValueError):
    """Invalid parameters; raised before any node runs, listing every issue."""

    def __init__(self, issues: list[ConfigIssue], env: str | None = None) -> None:
        self.issues = issues
        header = f"{len(issues)} invalid parameter(s)" + (f" in env '{env}'" if env else "")
        super().__init__(header + ":\n" + "\n".join(f"  - {issue.describe()}" for issue in issues))
