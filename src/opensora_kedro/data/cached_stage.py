"""A per-clip stage over a clip table whose results are kept from run to run: clips whose key
(file, and whatever else the result depends on) and stage settings are unchanged keep their
last result; the others run on the engine; failures become rejected rows."""

from __future__ import annotations

import json
import logging

import pandas as pd

from opensora_kedro.data.engine import ClipStage, EngineSettings, Journal, run_stage
from opensora_kedro.data.scan import FILE_KEY, REJECT_COLUMNS

logger = logging.getLogger(__name__)


def settings_fingerprint(settings: object, fields: tuple[str, ...]) -> str:
    """The ``fields`` of ``settings`` (the ones a stage's results depend on) as sorted JSON:
    what the results table stores per clip, so results of other settings are not reused.

    Built from the attributes, not a model dump: the JSON earlier runs stored for the same
    settings, so their results still match."""
    return json.dumps({name: getattr(settings, name) for name in fields}, sort_keys=True)


def run_cached_stage(
    clips: pd.DataFrame,
    stage: ClipStage,
    name: str,
    result_columns: list[str],
    fingerprint: str,
    previous: pd.DataFrame | None,
    engine: EngineSettings,
    journal: Journal | None = None,
    key_columns: tuple[str, ...] = ("path", *FILE_KEY),
    input_columns: tuple[str, ...] = ("num_frames",),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, rejected)``: ``key_columns``, ``result_columns`` and ``<name>_settings``
    (the ``fingerprint``) for every clip of ``clips``; the clips whose result is a failure as
    rejected rows of stage ``name``."""
    settings_column = f"{name}_settings"
    columns = [*key_columns, *result_columns, settings_column]
    keys = clips[list(key_columns)]
    known = pd.DataFrame(columns=columns)
    if previous is not None and set(columns) <= set(previous.columns):
        same = previous[previous[settings_column] == fingerprint].drop_duplicates(list(key_columns))
        known = keys.merge(same[columns], on=list(key_columns), how="inner")
    todo = clips[~clips["path"].isin(known["path"])]
    rows = todo[list(dict.fromkeys([*key_columns, *input_columns]))].to_dict("records")
    results = run_stage(stage, rows, engine, name, journal)
    failed = [r for r in results if "reason" in r]
    fresh = pd.DataFrame(
        [r for r in results if "reason" not in r], columns=["path", *result_columns]
    )
    fresh = todo[list(key_columns)].merge(fresh, on="path").assign(**{settings_column: fingerprint})
    table = pd.concat([known, fresh], ignore_index=True)[columns]
    rejected = pd.DataFrame(failed, columns=["path", "reason", "detail"]).assign(stage=name)
    logger.info(
        "%s: %d computed, %d unchanged, %d failed", name, len(fresh), len(known), len(failed)
    )
    return table, rejected[REJECT_COLUMNS]
