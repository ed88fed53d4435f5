"""Nothing of size N in a pipeline graph: the same config built against a 3x larger archive gives graphs of
the same size, pipeline by pipeline (the graphs hold partitions and paths, never records)."""
from __future__ import annotations

import os

import pytest

from bestiary.pipelines import io
from bestiary.pipelines.build import build
from bestiary.sample_archive.server import start_in_thread
from bestiary.schemas.config import parse_config
from tests.conftest import tiny_config


@pytest.mark.timeout(900)
def test_no_pipeline_graph_grows_with_the_record_count(tiny_build, tmp_path_factory):
    small_cfg, small = tiny_build
    out = str(tmp_path_factory.mktemp("tin6") / "out")   # as long as the tiny build's path: the same config bytes
    assert len(out) == len(small_cfg.out)
    server, state, url = start_in_thread(seed=7, scale=3)
    try:
        big = build(parse_config(tiny_config(url, out)))
    finally:
        server.shutdown()
        server.server_close()
    assert big["accounting"]["records_crawled"] > 2.5 * small["accounting"]["records_crawled"]
    graphs_small = io.read_json(os.path.join(small_cfg.out, "work", "graphs.json"))
    graphs_big = io.read_json(os.path.join(out, "work", "graphs.json"))
    assert set(graphs_small) == {"crawl", "enrich", "caption", "plan", "materialize", "finalize"}
    assert set(graphs_big) == set(graphs_small)
    for name, size in graphs_small.items():
        # the configs differ only in the servers' ports and Beam compresses pickled functions, so sizes vary by
        # tens of bytes; records in a graph would add hundreds of bytes each (the big archive has ~100 more)
        assert abs(graphs_big[name] - size) <= 0.002 * size, (name, size, graphs_big[name])
        assert size < 1_000_000, (name, size)
