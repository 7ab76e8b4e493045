"""The batch-size search against memory models: exact maxima, OOM recovery, the token rule."""

import pytest
import torch
import yaml
from pydantic import TypeAdapter

from opensora_kedro.config.resolve import resolve_parameters
from opensora_kedro.params import BucketConfigTree
from opensora_kedro.training.batch_probe import (
    LatentGeometry,
    ProbeSettings,
    bucket_config_yaml,
    largest_fitting,
    probe_buckets,
    probed_bucket_config,
    report,
    report_markdown,
    search_batch_sizes,
)
from tests.config.conftest import CPU, project_layers

GIB = 2**30
# Hunyuan VAE (8x space, 4x time, causal, 16 channels), patch 2, 512 T5 tokens: Open-Sora's.
OPEN_SORA = LatentGeometry(spatial=8, temporal=4, causal=True, patch=2, channels=16,
                           text_tokens=512)  # fmt: skip
# A stage's bucket_config as the schema hands it over (validated: int keys, tuple entries).
STAGE1 = TypeAdapter(BucketConfigTree).validate_python({
    "256px": {1: [1.0, 45], 5: [1.0, 12], 33: [1.0, 12], 65: [1.0, 6], 97: [1.0, 4],
              129: [1.0, 3]},
    "768px": {1: [0.5, 13]},
    "1024px": {1: [[0.5, 0.2], 7]},
})  # fmt: skip


class MemoryModel:
    """``fixed + per_token * tokens * batch (+ attention * tokens^2 * batch)`` bytes; raises
    torch's out-of-memory error above ``capacity``. Each failure leaves ``leak`` bytes
    cached (as a failed CUDA step does) until ``recover()`` frees them."""

    def __init__(self, fixed, per_token, capacity, attention=0.0, leak=0, extra=None):
        self.fixed, self.per_token, self.attention = fixed, per_token, attention
        self.capacity, self.leak, self.extra = capacity, leak, extra or {}
        self.cached = 0
        self.calls: list[tuple[str, int]] = []
        self.recoveries = 0

    def memory(self, bucket, batch: int) -> int:
        tokens = bucket.tokens
        per_sample = self.per_token * tokens + self.attention * tokens**2
        per_sample *= self.extra.get((bucket.resolution, bucket.num_frames), 1.0)
        return int(self.fixed + per_sample * batch)

    def __call__(self, bucket, batch: int) -> int:
        self.calls.append((f"{bucket.resolution}/{bucket.num_frames}", batch))
        assert batch >= 1
        needed = self.memory(bucket, batch) + self.cached
        if needed > self.capacity:
            self.cached += self.leak
            raise torch.OutOfMemoryError(f"tried {needed} bytes")
        return needed

    def recover(self) -> None:
        self.recoveries += 1
        self.cached = 0

    def largest(self, bucket, budget: int, max_batch: int) -> int:
        """The exact answer, by brute force."""
        fitting = [b for b in range(1, max_batch + 1)
                   if self.memory(bucket, b) <= min(budget, self.capacity)]  # fmt: skip
        return max(fitting, default=0)


def buckets():
    return probe_buckets(STAGE1, OPEN_SORA)


@pytest.mark.parametrize("threshold", [0, 1, 2, 3, 7, 8, 9, 31, 64, 100, 500])
@pytest.mark.parametrize("start", [1, 5, 45, 200])
def test_largest_fitting_is_exact_and_stays_in_range(threshold, start):
    tried = []

    def fits(batch):
        tried.append(batch)
        return batch <= threshold

    assert largest_fitting(fits, start, limit=100) == min(threshold, 100)
    assert all(1 <= b <= 100 for b in tried)
    assert len(tried) <= 2 * 7 + 2  # exponential + binary: logarithmic, not linear


def test_buckets_count_tokens_at_the_largest_ratio_fewest_first():
    found = {(b.resolution, b.num_frames): b for b in buckets()}
    # 256px's largest-area training ratio is 3:2 (208x320) -> 26x40 latent, 13x20 tokens.
    assert found[("256px", 129)].latent_shape == (16, 33, 26, 40)
    assert found[("256px", 129)].image_tokens == 33 * 13 * 20
    assert found[("256px", 1)].tokens == 13 * 20 + 512
    tokens = [b.tokens for b in buckets()]
    assert tokens == sorted(tokens)


def test_linear_memory_model_gives_exact_maxima():
    model = MemoryModel(fixed=20 * GIB, per_token=2 * 2**20, capacity=141 * GIB)
    settings = ProbeSettings(budget_bytes=int(0.9 * 141 * GIB), max_batch=1024)
    results = search_batch_sizes(buckets(), model, settings, model.recover)
    for bucket, result in zip(buckets(), results, strict=True):
        assert result.batch == model.largest(bucket, settings.budget_bytes, 1024), bucket
        assert result.tokens_per_step == result.batch * bucket.tokens
        assert result.peak_memory_gib == pytest.approx(model.memory(bucket, result.batch) / GIB,
                                                       abs=1e-3)  # fmt: skip
        assert result.monotonic
    batches = [r.batch for r in results]
    assert batches == sorted(batches, reverse=True)  # more tokens, never a larger batch


def test_oom_is_recovered_after_every_failure():
    # Every OOM leaves 30 GiB cached: without recover() the next trials would fail too and
    # the found sizes would be far below the true maxima.
    model = MemoryModel(fixed=10 * GIB, per_token=3 * 2**20, capacity=80 * GIB, leak=30 * GIB)
    settings = ProbeSettings(budget_bytes=80 * GIB, max_batch=512)
    results = search_batch_sizes(buckets(), model, settings, model.recover)
    failures = sum(1 for bucket_name, b in model.calls
                   if any(f"{r.resolution}/{r.num_frames}" == bucket_name and b > r.batch
                          for r in results))  # fmt: skip
    assert model.recoveries == failures > 0
    for bucket, result in zip(buckets(), results, strict=True):
        assert result.batch == model.largest(bucket, settings.budget_bytes, 512)


def test_a_peak_over_the_budget_does_not_fit_even_without_an_oom():
    # The device has room (no OOM) but the budget (memory_fraction) is smaller.
    model = MemoryModel(fixed=5 * GIB, per_token=2**20, capacity=200 * GIB)
    settings = ProbeSettings(budget_bytes=40 * GIB, max_batch=4096)
    results = search_batch_sizes(buckets(), model, settings, model.recover)
    assert model.recoveries == 0
    for bucket, result in zip(buckets(), results, strict=True):
        assert result.batch == model.largest(bucket, settings.budget_bytes, 4096)
        assert result.peak_memory_gib <= 40


def test_attention_memory_and_buckets_that_do_not_fit():
    # Quadratic attention memory: the longest clips do not fit even one sample.
    model = MemoryModel(fixed=10 * GIB, per_token=2**20, attention=2**12, capacity=60 * GIB)
    settings = ProbeSettings(budget_bytes=60 * GIB, max_batch=1024)
    results = search_batch_sizes(buckets(), model, settings, model.recover)
    expected = [model.largest(b, settings.budget_bytes, 1024) for b in buckets()]
    assert [r.batch for r in results] == expected
    assert 0 in expected and expected[0] > 0
    misfits = report(results, {"name": "model"})["not_fitting"]
    assert misfits == [f"{r.resolution}/{r.num_frames}" for r in results if not r.batch]
    config = probed_bucket_config(buckets(), results)
    assert all(batch > 0 for entries in config.values() for _, batch in entries.values())


def test_the_token_rule_seeds_the_search_with_fewer_trials():
    model = MemoryModel(fixed=20 * GIB, per_token=2**20, capacity=141 * GIB)
    settings = ProbeSettings(budget_bytes=120 * GIB, max_batch=1024)
    seeded = search_batch_sizes(buckets(), model, settings, model.recover)
    unseeded = 0
    budget = settings.budget_bytes
    for bucket in buckets():
        unseeded_calls = []

        def fits(batch, bucket=bucket, calls=unseeded_calls):
            calls.append(batch)
            return model.memory(bucket, batch) <= budget

        largest_fitting(fits, 1, 1024)
        unseeded += len(unseeded_calls)
    assert sum(r.trials for r in seeded) < unseeded


def test_a_bucket_breaking_the_token_rule_is_searched_past_it_and_reported():
    # 768px images need only a third of the memory per token of the others: with more
    # tokens than 256px/33 they still fit more samples.
    model = MemoryModel(fixed=20 * GIB, per_token=2**20, capacity=100 * GIB,
                        extra={("768px", 1): 1 / 3})  # fmt: skip
    settings = ProbeSettings(budget_bytes=100 * GIB, max_batch=1024)
    results = search_batch_sizes(buckets(), model, settings, model.recover)
    by_name = {(r.resolution, r.num_frames): r for r in results}
    for bucket in buckets():
        assert by_name[(bucket.resolution, bucket.num_frames)].batch == model.largest(
            bucket, settings.budget_bytes, 1024
        )
    assert not by_name[("768px", 1)].monotonic
    assert report(results, {})["monotonicity_violations"] == ["768px/1"]
    assert "more than a smaller bucket" in report_markdown(results)


def test_the_written_bucket_config_is_a_valid_env_file():
    model = MemoryModel(fixed=20 * GIB, per_token=2**20, capacity=141 * GIB)
    settings = ProbeSettings(budget_bytes=120 * GIB, max_batch=1024)
    results = search_batch_sizes(buckets(), model, settings, model.recover)
    config = probed_bucket_config(buckets(), results)
    text = bucket_config_yaml("diffusion_stage1", config, ["probed on a memory model"])
    assert text.startswith("# probed on a memory model\n")
    layer = yaml.safe_load(text)
    layers = [*project_layers("gpu"), ("conf/gpu/parameters_diffusion_stage1_probed.yml", layer)]
    stage = resolve_parameters(layers, hardware=CPU).models["diffusion_stage1"]
    assert stage.batch_size_scale == 1.0
    found = {(r.resolution, r.num_frames): r.batch for r in results}
    resolved = {(res, t): entry[1] for res, entries in stage.bucket_config.items()
                for t, entry in entries.items()}  # fmt: skip
    assert resolved == found  # replaced (_delete_), not merged into the env's own buckets
    assert stage.bucket_config["1024px"][1][0] == (0.5, 0.2)  # probabilities kept
    assert stage.bucket_config["768px"][1][0] == 0.5


def test_nothing_fitting_writes_nothing():
    with pytest.raises(ValueError, match="no bucket fits"):
        bucket_config_yaml("diffusion_stage1", {}, [])
