"""The same build on Beam's multi-process runner (2 SDK-harness workers, as Dataflow, Flink and Spark run
them) writing to s3:// on a local moto server, and stages submitted from their serialized graphs to a job
process: output identical to one process."""
import hashlib
import json
import os

import pytest

from bestiary.pipelines import io
from bestiary.pipelines.build import build
from bestiary.schemas.config import parse_config
from tests.conftest import tiny_config

BUCKET = "bestiary-test"


@pytest.fixture(scope="module")
def s3(moto_s3):
    return moto_s3


def small_config(url: str, out: str, **extra) -> dict:
    """Two of the four sources (Xeno-canto's Strix, Macaulay's audio and photos): every stage, fewer requests."""
    cfg = tiny_config(url, out, **extra)
    cfg["sources"] = [dict(s, queries=s["queries"][:1]) if s["name"] == "xeno-canto" else s
                      for s in cfg["sources"] if s["name"] in ("xeno-canto", "macaulay")]
    return cfg


@pytest.mark.slow   # about two minutes (two builds, one on moto's s3): `make test-all`
@pytest.mark.timeout(600)
def test_multi_process_build_on_s3_matches_the_single_process_build(archive_server, s3, tmp_path):
    _, url = archive_server
    local_cfg = parse_config(small_config(url, str(tmp_path / "local")))
    local_stats = build(local_cfg)
    runner = {"mode": "multi_processing", "workers": 2,
              "options": [f"--s3_endpoint_url={s3}", "--s3_region_name=us-east-1"]}
    cfg = parse_config(small_config(url, f"s3://{BUCKET}/run", runner=runner))
    stats = build(cfg)
    assert stats["accounting"] == local_stats["accounting"]
    remote = io.read_bytes(f"s3://{BUCKET}/run/shards/manifest.json")
    with open(os.path.join(local_cfg.out, "shards", "manifest.json"), "rb") as fh:
        assert remote == fh.read()  # same shards, same bytes, same sha256s
    manifest = json.loads(remote)
    first = manifest["shards"][0]
    data = io.read_bytes(f"s3://{BUCKET}/run/shards/{first['file']}")
    assert hashlib.sha256(data).hexdigest() == first["sha256"]
    blobs = io.listdir(f"s3://{BUCKET}/run/cache/media/blobs/*")
    assert blobs  # the media cache is shared through the bucket too


@pytest.mark.timeout(600)
def test_stages_run_from_their_serialized_graph_in_a_job_process(tiny_build, tmp_path):
    """The graph goes through the runner API proto to another process, as a job server gets it; the catalog
    it writes is the in-process build's, byte for byte."""
    import filecmp
    import shutil
    from bestiary.pipelines.build import run_one
    local_cfg, _ = tiny_build
    out = tmp_path / "out"
    for keep in ("raw", "state"):
        shutil.copytree(os.path.join(local_cfg.out, keep), out / keep)
    cfg = local_cfg.model_copy(update={"out": str(out), "runner": local_cfg.runner.model_copy(
        update={"mode": "multi_processing", "workers": 2, "job_process": True})})
    run_one(cfg, "crawl")
    for table in ("recordings", "images"):
        ours = sorted(os.listdir(out / "catalog" / table))
        assert ours == sorted(os.listdir(os.path.join(local_cfg.out, "catalog", table)))
        for part in ours:
            assert filecmp.cmp(out / "catalog" / table / part, os.path.join(local_cfg.out, "catalog", table, part),
                               shallow=False)
    assert io.read_json(str(out / "work" / "graphs.json"))["crawl"] > 0


@pytest.mark.parametrize("name", ["dataflow", "flink", "spark"])
def test_runner_configs_parse_and_name_their_runner(name, monkeypatch):
    """The shipped Dataflow, Flink and Spark configs are valid build configs whose options reach Beam."""
    from bestiary.pipelines.runner import pipeline_options
    from bestiary.schemas.config import load_config
    for var, value in {"BUCKET": "b", "GCP_PROJECT": "p", "FLINK_MASTER": "h:8081", "SPARK_MASTER": "spark://h:7077"}.items():
        monkeypatch.setenv(var, value)
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "runners", f"{name}.yaml"))
    assert cfg.runner.mode == "portable"
    opts = pipeline_options(cfg.runner).get_all_options()
    assert opts["runner"] == {"dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}[name]
    assert cfg.out.startswith(("gs://", "s3://"))
