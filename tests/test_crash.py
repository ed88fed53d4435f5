"""SIGKILL at fixed points in crawl, materialize and manifest writing; a rerun ends where an unkilled build does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bestiary.pipelines import io
from bestiary.pipelines.build import build
from bestiary.schemas.config import parse_config
from tests.conftest import tiny_config

SCRIPT = textwrap.dedent("""
    import json, sys
    from bestiary.pipelines.build import build
    from bestiary.schemas.config import parse_config
    build(parse_config(json.loads(sys.argv[1])))
""")


@pytest.mark.timeout(600)
# the media stage's kill in the default suite; the crawl's and finalize's in `make test-all` (a crawl killed
# mid-way is also resumed in tests/test_faults.py)
@pytest.mark.parametrize("point", [pytest.param("crawl:page:3", marks=pytest.mark.slow), "materialize:tar:2",
                                   pytest.param("finalize:manifest", marks=pytest.mark.slow)])
def test_killed_build_then_rerun_equals_an_unkilled_one(tiny_build, archive_server, tmp_path, point):
    ref_cfg, ref_stats = tiny_build
    _, url = archive_server
    out = str(tmp_path / "out")
    conf = tiny_config(url, out)
    env = {**os.environ, "BESTIARY_KILL_AT": point}
    killed = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(conf)], env=env, capture_output=True,
                            text=True, timeout=500)
    assert killed.returncode == -9, killed.stderr[-2000:]          # it died there, with no clean-up
    shards = os.path.join(out, "shards")
    manifest_path = os.path.join(shards, "manifest.json")
    if point != "finalize:manifest":
        assert not io.exists(manifest_path)                        # nothing published half-way
    else:  # the versioned manifest is there, the latest not yet: readers still see no dataset
        assert io.exists(os.path.join(shards, "manifest-v1.json")) and not io.exists(manifest_path)
    for name in os.listdir(shards) if os.path.isdir(shards) else []:
        assert ".tmp" not in name or not name.endswith(".tar"), name  # no half-written tar under a shard's name
    stats = build(parse_config(conf))                              # the same command again
    ref = io.read_json(os.path.join(ref_cfg.out, "shards", "manifest.json"))
    got = io.read_json(manifest_path)
    assert got == ref                                              # every shard's sha256, counts and splits
    assert stats["accounting"] == ref_stats["accounting"] and stats["accounting"]["balanced"]
    listed = {s["file"] for s in got["shards"]}
    assert listed == {n for n in os.listdir(shards) if n.endswith(".tar")}
