import pandas as pd

from opensora_kedro.data.bucket import assign_buckets
from opensora_kedro.data.bucket_config import BucketConfig
from opensora_kedro.data.bucket_report import bucket_report, plot_bucket_report


def test_report_counts_samples_batches_and_skips():
    table = pd.DataFrame(
        {
            "num_frames": [1, 1, 1, 33, 33, 33, 33, 33, 5, 40],
            "height": [256, 256, 256, 256, 256, 256, 256, 256, 256, 16],
            "width": [256, 256, 256, 256, 256, 256, 256, 256, 256, 16],
            "fps": [float("nan")] * 3 + [24.0] * 7,
        }
    )
    config = BucketConfig.from_dict({"256px": {1: (1.0, 2), 33: (1.0, 2)}})
    report = bucket_report(assign_buckets(table, config, seed=0, epoch=0, fps_max=24))
    assigned = report[report["skip_reason"].isna()].set_index("bucket_num_frames")
    assert assigned.loc[1, ["samples", "batches"]].tolist() == [3, 1]
    assert assigned.loc[33, ["samples", "batches"]].tolist() == [5, 2]
    skipped = report[report["skip_reason"].notna()].set_index("skip_reason")["samples"].to_dict()
    assert skipped == {"too_short": 1, "too_small": 1}
    figure = plot_bucket_report(report)
    assert len(figure.axes[0].patches) == 2 * len(report)
