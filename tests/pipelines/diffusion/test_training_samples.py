"""Samples during training on the tiny chain: generated clips (t2v and i2v) as mp4, GIF and
contact sheet, logged without changing what the run trains."""

from pathlib import Path

import av
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.pipelines.diffusion.test_parallel_state import ONE, _train

SAMPLES = {"every": 2, "count": 2, "num_steps": 2}


def _files(run: Path, step: int) -> set[str]:
    return {p.name for p in (run / "samples" / f"step-{step:08d}").iterdir()}


def test_sample_sets_are_written_and_leave_training_unchanged(chain):
    plain = _train(chain, "no_samples", ONE, max_steps=2)
    sampled = _train(chain, "samples", ONE, max_steps=2, samples=SAMPLES)
    run = chain.root / "samples"
    assert _files(run, 2) == {"sample-0.mp4", "sample-1.mp4", "samples.gif", "samples.png",
                              "labels.txt"}  # fmt: skip
    with av.open(str(run / "samples" / "step-00000002" / "sample-0.mp4")) as video:
        assert video.streams.video[0].frames == 9  # the first bucket's longest clips
    assert Image.open(run / "samples" / "step-00000002" / "samples.gif").n_frames > 1
    weights = [load_file(str(Path(r["export"]) / "model.safetensors")) for r in (plain, sampled)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_i2v_stages_sample_from_a_reference_frame(chain):
    _train(chain, "i2v_samples", ONE, max_steps=2, samples=SAMPLES,
           model={"cond_embed": True}, condition_config={"t2v": 1, "i2v_head": 1})  # fmt: skip
    labels = chain.root / "i2v_samples" / "samples" / "step-00000002" / "labels.txt"
    assert labels.read_text().startswith("sample-0: i2v_head: ")


def test_a_bf16_model_samples_in_its_own_dtype(chain, tmp_path):
    from opensora_kedro.training.diffusion_job import DiffusionTask

    params = chain.params({"diffusion_stage1": {"samples": {**SAMPLES, "count": 1}}})
    stage = params["diffusion_stage1"]
    inputs = {"text_embeddings": str(chain.root / "text_embeddings"),
              "vae_model": str(chain.root / "vae")}  # fmt: skip
    task = DiffusionTask(stage, chain.table, inputs)
    model = task.build_model().to(torch.bfloat16).eval()  # a ZeRO / bf16 working copy
    written = task.samples(model, tmp_path / "samples")
    assert {p.name for p in written} >= {"sample-0.mp4", "samples.png"}
