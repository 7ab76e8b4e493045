"""Configuration errors: every problem at once, each with its key path, value, rule and source.

Every error a user can fix by editing configuration (a parameter, an env name, a YAML file,
a missing input file, a machine that does not match the env) is a :class:`UserConfigError`:
the command line prints its message list without a traceback and exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PARAMS_ORIGIN = "--params"


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
        if not self.path:
            return f"{self.rule}{where}"
        return f"{self.key} = {self.value!r}: {self.rule}{where}"


class UserConfigError(ValueError):
    """A problem in the configuration or the run's inputs that the user fixes, not the code.

    ``kedro run`` and ``kedro config`` print :attr:`messages` without a traceback.
    """

    def __init__(self, header: str, messages: list[str]) -> None:
        self.header = header
        self.messages = messages
        super().__init__(header + ":\n" + "\n".join(f"  - {line}" for line in messages))


class ConfigError(UserConfigError):
    """Invalid parameters; raised before any node runs, listing every issue."""

    def __init__(
        self, issues: list[ConfigIssue], env: str | None = None, what: str = "invalid parameter(s)"
    ) -> None:
        self.issues = issues
        self.env = env
        header = f"{len(issues)} {what}" + (f" in env '{env}'" if env else "")
        super().__init__(header, [issue.describe() for issue in issues])


class UnknownEnvError(UserConfigError):
    """``--env`` names a folder that is not under the configuration source."""

    def __init__(self, env: str, conf_source: str, known: list[str]) -> None:
        self.env, self.known = env, known
        super().__init__(
            f"unknown env '{env}'",
            [f"there is no folder {conf_source}/{env}; envs: {', '.join(known) or '(none)'}"],
        )


class ConfigFileError(UserConfigError):
    """A configuration file that is not valid YAML (syntax, duplicate keys...)."""

    def __init__(self, path: str, line: int | None, column: int | None, problem: str) -> None:
        self.path, self.line, self.column = path, line, column
        where = path if line is None else f"{path}, line {line}, column {column}"
        super().__init__(f"invalid configuration file {path}", [f"{where}: {problem}"])
