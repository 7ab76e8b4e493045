"""The ``inference`` pipeline on the tiny trained chain: prompts in, mp4 + txt out."""

from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from opensora_kedro.config.errors import ConfigError
from opensora_kedro.config.resolve import resolve_parameters
from opensora_kedro.data.training_table import typical_motion_score
from opensora_kedro.datasets.handover import HandoverTableDataset
from opensora_kedro.pipelines.inference import create_pipeline
from opensora_kedro.pipelines.inference.nodes import collect_prompts
from opensora_kedro.video.decode import read_frames
from tests.config.conftest import CPU, project_layers
from tests.pipelines.conftest import INPROCESS

FAST = {"sampling_option": {"num_steps": 2}}


def run_inference(chain, inference: dict, out_dir, table=None) -> pd.DataFrame:
    params = chain.params({"inference": inference})["inference"]
    catalog = DataCatalog(
        {
            "params:inference": MemoryDataset(params),
            "training_table_if_any": MemoryDataset(chain.table if table is None else table),
            "params:launcher": MemoryDataset(INPROCESS),
            "model_output_dir": MemoryDataset(str(out_dir)),
            "inference_plan": HandoverTableDataset(str(Path(out_dir) / "inference_plan.parquet")),
            "inference_samples": MemoryDataset(),
        }
    )
    return SequentialRunner().run(create_pipeline(), catalog)["inference_samples"].load()


def test_a_prompt_becomes_a_video_and_its_prompt_file(trained_chain, tmp_path):
    samples = run_inference(trained_chain, {**FAST, "prompt": "a red circle moving left"}, tmp_path)
    assert len(samples) == 1
    row = samples.iloc[0]
    frames = read_frames(row["video"])
    assert frames.shape == (9, 48, 80, 3)  # conf/local: 64px 16:9, 9 frames
    text = open(row["text"]).read()
    # conf/local prompts in the training captions' form, with their usual motion score.
    score = typical_motion_score(trained_chain.table)
    assert text == f"a red circle moving left 24 FPS, {score} motion score."
    assert str(tmp_path / "samples") in row["video"]


def test_auto_motion_score_without_a_training_table_says_what_to_do(trained_chain, tmp_path):
    with pytest.raises(ValueError, match="run data_processing first, or set a number"):
        run_inference(trained_chain, {**FAST, "prompt": "a red circle"}, tmp_path, pd.DataFrame())


def test_csv_prompts_with_samples_and_an_image_reference(trained_chain, tmp_path):
    first = run_inference(trained_chain, {**FAST, "prompt": "a blue square moving up"}, tmp_path)
    csv = tmp_path / "prompts.csv"
    pd.DataFrame({"text": ["a green circle moving down", "a purple square staying still"],
                  "ref": [first.loc[0, "video"], None]}).to_csv(csv, index=False)  # fmt: skip
    samples = run_inference(
        trained_chain,
        {**FAST, "prompt": None, "prompt_csv": str(csv), "num_samples": 2, "end_index": 1,
         "cond_type": "i2v_head", "save_dir": "i2v"},
        tmp_path,
    )  # fmt: skip
    assert list(samples["index"]) == [0, 0] and list(samples["sample"]) == [0, 1]
    assert samples["seed"].nunique() == 2
    assert all((tmp_path / "i2v").joinpath(p).exists() for p in samples["video"])


def test_t2i2v_runs_end_to_end_in_env_local(trained_chain, tmp_path):
    samples = run_inference(
        trained_chain,
        {**FAST, "extends": "inference_t2i2v_256px", "prompt": "a yellow triangle moving right"},
        tmp_path,
    )
    assert read_frames(samples.loc[0, "video"]).shape[0] == 9


def _inference(params: dict):
    return resolve_parameters(project_layers("local", {"inference": params}), CPU)


def test_without_prompts_the_error_says_how_to_give_them():
    params = _inference({"prompt": None, "prompt_csv": None}).models["inference"]
    with pytest.raises(ValueError, match="inference.prompt"):
        collect_prompts(params)


def test_a_prompt_and_a_prompt_csv_together_are_refused():
    # never one silently dropped (issue 15): the config layer keeps the --params one, and
    # refuses both given together, so no node ever sees both
    with pytest.raises(ConfigError, match="both set"):
        _inference({"prompt": "a cat", "prompt_csv": "prompts.csv"})
