"""The base of every typed parameter class, and the field types they share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from opensora_kedro.data.aspect import num_pixels, ratio_value

# (key path relative to the model, value, rule)
Issue = tuple[tuple, Any, str]


def nested_params(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Params]]:
    """Every :class:`Params` inside ``value`` (itself, dict values, list items) with its path."""
    if isinstance(value, Params):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from nested_params(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from nested_params(item, (*path, index))


class Params(BaseModel):
    """Base of every schema: unknown keys are errors, defaults are validated too.

    A schema states its own rules in :meth:`cross_checks`, the fields that another setting
    makes inert in :meth:`inert_fields` and the files it reads in :meth:`input_paths`; the
    ``all_*`` methods apply them to this model and to every model nested in it, so a rule
    defined on a nested schema can never be left unwired.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def cross_checks(self, context: dict[str, Any]) -> list[Issue]:
        """Rules across this model's own fields: ``(relative key path, value, rule)``."""
        return []

    def inert_fields(self) -> list[tuple[tuple, str]]:
        """Fields set to a value that another setting makes the code ignore: (path, why)."""
        return []

    def input_paths(self) -> list[tuple[tuple, str]]:
        """Files or folders this model names that the run reads (must exist): (path, value)."""
        return []

    def output_paths(self) -> list[str]:
        """Files or folders the run of this group writes outside the catalog (so a group
        that reads them as inputs finds them made)."""
        return []

    def _children(self) -> Iterator[tuple[tuple, Params]]:
        for name in type(self).model_fields:
            yield from nested_params(getattr(self, name), (name,))

    def all_cross_checks(self, context: dict[str, Any]) -> list[Issue]:
        """:meth:`cross_checks` of this model and of every nested model, with full paths."""
        issues = list(self.cross_checks(context))
        for path, child in self._children():
            issues += [((*path, *p), v, r) for p, v, r in child.all_cross_checks(context)]
        return issues

    def all_inert_fields(self) -> list[tuple[tuple, str]]:
        """:meth:`inert_fields` of this model and of every nested model, with full paths."""
        found = list(self.inert_fields())
        for path, child in self._children():
            found += [((*path, *p), why) for p, why in child.all_inert_fields()]
        return found

    def all_input_paths(self) -> list[tuple[tuple, str]]:
        """:meth:`input_paths` of this model and of every nested model, with full paths."""
        found = list(self.input_paths())
        for path, child in self._children():
            found += [((*path, *p), value) for p, value in child.all_input_paths()]
        return found


def _check_resolution(name: str) -> str:
    num_pixels(name)  # raises ValueError saying what a resolution name looks like
    return name


def _check_ratio(name: str) -> str:
    ratio_value(name)
    return name


ResolutionName = Annotated[str, AfterValidator(_check_resolution)]


RatioName = Annotated[str, AfterValidator(_check_ratio)]


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


PositiveInt = Annotated[int, Field(gt=0)]


NonNegativeInt = Annotated[int, Field(ge=0)]


Dtype = Literal["bf16", "fp16", "fp32"]


# Either the probability of taking a bucket, or (p_keep_at_this_resolution, p_skip_to_shorter_t).
BucketProbability = Probability | tuple[Probability, Probability]


BucketEntry = tuple[BucketProbability, PositiveInt]


# The YAML form of a bucket config; `data.bucket.BucketConfig` is the parsed one training uses.
BucketConfigTree = dict[ResolutionName, dict[PositiveInt, BucketEntry]]


def bucket_frame_issues(
    bucket_config: dict[str, dict[int, Any]], rule: str, valid
) -> list[tuple[tuple, Any, str]]:
    """Frame keys of ``bucket_config`` that ``valid(t)`` rejects, as cross-check issues."""
    return [
        (("bucket_config", resolution, frames), frames, rule)
        for resolution, entries in bucket_config.items()
        for frames in entries
        if not valid(frames)
    ]
