"""Buckets of the training table: samples and batches per bucket, and the clips left out."""

from __future__ import annotations

import pandas as pd

REPORT_COLUMNS = [
    "bucket_resolution", "bucket_num_frames", "bucket_aspect", "bucket_height", "bucket_width",
    "batch_size", "samples", "batches", "skip_reason",
]  # fmt: skip


def bucket_report(assignment: pd.DataFrame) -> pd.DataFrame:
    """One row per bucket (samples, batch size, full batches with ``drop_last``) and one per
    reason clips were not assigned (``skip_reason`` set, bucket columns empty)."""
    keys = REPORT_COLUMNS[:6]  # the bucket columns
    assigned = assignment[assignment["skip_reason"].isna()]
    buckets = assigned.groupby(keys, dropna=False).size().rename("samples").reset_index()
    buckets["batches"] = buckets["samples"] // buckets["batch_size"]
    buckets = buckets.sort_values(["bucket_resolution", "bucket_num_frames", "bucket_aspect"])
    skipped = assignment["skip_reason"].dropna().value_counts().rename_axis("skip_reason")
    skipped = skipped.rename("samples").reset_index().assign(batches=0)
    report = pd.concat([buckets.assign(skip_reason=None), skipped], ignore_index=True)
    return report.reindex(columns=REPORT_COLUMNS)


def plot_bucket_report(report: pd.DataFrame):
    """A bar chart of samples and full batches per bucket, plus the clips left out."""
    import matplotlib

    matplotlib.use("Agg")  # headless: the figure is only saved
    import matplotlib.pyplot as plt

    assigned = report[report["skip_reason"].isna()]
    labels = [
        f"{r.bucket_resolution} {int(r.bucket_num_frames)}f {r.bucket_aspect}"
        for r in assigned.itertuples()
    ] + [f"not assigned: {reason}" for reason in report["skip_reason"].dropna()]
    samples = list(assigned["samples"]) + list(report.loc[report["skip_reason"].notna(), "samples"])
    batches = list(assigned["batches"]) + [0] * (len(labels) - len(assigned))
    figure, axis = plt.subplots(figsize=(8, max(2.5, 0.3 * len(labels) + 1)))
    positions = range(len(labels))
    axis.barh([p + 0.2 for p in positions], samples, height=0.4, label="samples")
    axis.barh([p - 0.2 for p in positions], batches, height=0.4, label="full batches")
    axis.set_yticks(list(positions), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("count")
    axis.set_title("Training table by bucket")
    axis.legend()
    figure.tight_layout()
    return figure
