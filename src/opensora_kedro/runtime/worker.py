"""A launched worker: ``python -m opensora_kedro.runtime.worker --spec spec.json``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from opensora_kedro.console import quiet_known_warnings
from opensora_kedro.runtime.launcher import RESULT_FILE, read_spec, run_job


def main() -> None:
    """Run the job of ``--spec`` as this worker's rank; record the error for the launcher."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, help="the job spec JSON written by the launcher")
    args = parser.parse_args()
    spec = read_spec(Path(args.spec).read_text())
    rank = int(os.environ.get("RANK", "0"))
    # Rank 0 reports progress; the others speak only when something is wrong.
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"rank {rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    quiet_known_warnings()
    try:
        result = run_job(spec)
    except BaseException:
        spec.job_dir.mkdir(parents=True, exist_ok=True)
        (spec.job_dir / f"error-rank{rank}.txt").write_text(traceback.format_exc())
        raise
    if rank == 0:
        (spec.job_dir / RESULT_FILE).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
