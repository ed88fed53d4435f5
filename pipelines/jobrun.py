"""`python -m bestiary.pipelines.jobrun GRAPH RUNNER_JSON`: run one serialized pipeline (runner.job_process)."""
import logging
import sys

from bestiary.pipelines.runner import run_job

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run_job(sys.argv[1], sys.argv[2])
