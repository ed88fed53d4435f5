"""The command line: clear one-line errors with exit code 2, and help that lists every subcommand."""
import os
import socket
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, TEST_KEY

SUBCOMMANDS = ["serve-sample", "crawl", "enrich", "caption", "shard", "build", "verify", "train", "eval", "export", "embed",
               "classify"]


def run(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "bestiary.pipelines.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.fixture
def here(capsys, monkeypatch):
    """The command line in this process (`main`, as the console script calls it): what the error paths do
    without an interpreter start each; an exception main does not turn into one line fails the test."""
    from bestiary.pipelines import progress
    from bestiary.pipelines.cli import main
    monkeypatch.setattr(progress, "ENABLED", progress.ENABLED)   # main turns progress lines on: undone after

    def call(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        rc = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)
    return call


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(tmp_path, data) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


@pytest.mark.parametrize("mutate,needle", [
    (lambda c: c["sources"][0].update(name="flickr"), "unknown source 'flickr'"),
    (lambda c: c["sources"][0].pop("base_url"), "'sources.0': xeno-canto needs base_url"),
    (lambda c: c.pop("out"), "missing required field 'out'"),
    (lambda c: c["sources"][0].update(base_url=f"http://127.0.0.1:{free_port()}"), "cannot reach xeno-canto"),
    (lambda c: c["sources"][0].update(base_url="ftp://x"), "not an http(s) URL"),
    (lambda c: c.update(taxonomy={"backbone": "/nonexistent/Taxon.tsv"}),
     "taxonomy.backbone: /nonexistent/Taxon.tsv not found"),
    (lambda c: c.update(taxonomy={"traits": [{"path": "/nonexistent/avonet.csv", "mapping": "avonet"}]}),
     "taxonomy.traits.0.path: /nonexistent/avonet.csv not found"),
    (lambda c: c.update(taxonomy={"traits": [{"path": str(ROOT / "sample_archive/data/avonet.csv"), "mapping": "avonett"}]}),
     "taxonomy.traits.0.mapping: no trait mapping 'avonett'"),
])
def test_bad_config_stops_before_work_with_one_line(tmp_path, archive_server, mutate, needle, here):
    _, url = archive_server
    cfg = {"out": str(tmp_path / "out"), "sources": [{"name": "xeno-canto", "base_url": url, "queries": ["gen:Parus"],
                                                       "api_key_env": "XC_API_KEY"}]}
    mutate(cfg)
    res = here("build", write(tmp_path, cfg))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not (tmp_path / "out").exists()  # nothing was started


def test_missing_key_and_missing_file(tmp_path, archive_server):
    _, url = archive_server
    cfg = {"out": str(tmp_path / "o"), "sources": [{"name": "xeno-canto", "base_url": url, "queries": ["gen:Parus"],
                                                     "api_key_env": "BESTIARY_TEST_UNSET_KEY"}]}
    res = run("build", write(tmp_path, cfg))
    assert res.returncode == 2 and "BESTIARY_TEST_UNSET_KEY" in res.stderr
    res = run("build", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_help_lists_every_subcommand_and_readme_agrees():
    res = run("--help")
    assert res.returncode == 0
    readme = (ROOT / "README.md").read_text()
    for cmd in SUBCOMMANDS:
        assert cmd in res.stdout
        assert f"bestiary {cmd}" in readme, f"README does not show `bestiary {cmd}`"


def test_crawl_one_source_without_a_config(tmp_path, archive_server):
    _, url = archive_server
    res = run("crawl", "--source", "xeno-canto", "--base-url", url, "--query", "gen:Athene",
              "--api-key-env", "XC_API_KEY", "--out", str(tmp_path / "c"), env={"XC_API_KEY": TEST_KEY})
    assert res.returncode == 0, res.stderr
    import pyarrow.parquet as pq
    rows = pq.read_table(tmp_path / "c" / "catalog" / "recordings").to_pylist()
    assert rows and {r["scientific_name"] for r in rows} == {"Athene noctua"}
    assert TEST_KEY not in res.stdout + res.stderr


@pytest.mark.parametrize("args", [
    ["eval", "--checkpoint", "{t}/none.pt", "--shards", "{t}"],
    ["export", "{t}/none.pt", "{t}/exported"],
    ["index", "--checkpoint", "{t}/none.pt", "--input", "{t}", "--out", "{t}/idx"],
    ["verify", "{t}/no-build"],
])
def test_a_missing_path_is_named_in_one_line(tmp_path, args, here):
    (tmp_path / "call.wav").write_bytes(b"")   # an input folder with something in it
    res = here(*[a.format(t=tmp_path) for a in args])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("bestiary: not found: ") and str(tmp_path) in lines[0] and "Errno" not in lines[0]


def test_rebuild_of_an_output_never_built_is_one_line(tmp_path, archive_server, here):
    """--rebuild redoes a build from its kept pages; with none there it says so instead of building nothing."""
    _, url = archive_server
    cfg = {"out": str(tmp_path / "out"), "sources": [{"name": "gbif", "base_url": url, "queries": [{"mediaType": "Sound"}]}]}
    res = here("build", write(tmp_path, cfg), "--rebuild")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "has no build of this config to redo" in lines[0]
    assert not (tmp_path / "out" / "catalog").exists()


def test_stage_errors_are_one_line(tmp_path, archive_server):
    """A portable runner without --runner, and a stage run before the one it needs: one line, exit 2."""
    _, url = archive_server
    base = {"out": str(tmp_path / "out"), "sources": [{"name": "gbif", "base_url": url, "queries": [{"mediaType": "Sound"}]}]}
    res = run("build", write(tmp_path, {**base, "runner": {"mode": "portable"}}))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "needs --runner" in res.stderr
    res = run("caption", write(tmp_path, base))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no catalog/resolutions yet: run `bestiary enrich`" in res.stderr


def test_caption_needs_no_archive_but_crawl_and_shard_do(tmp_path, here):
    """Preflight looks only at the hosts the stages it runs talk to: after crawl and enrich, the archive can
    be down and `bestiary caption` still runs; `crawl` and `shard` (which fetches media) say it is down."""
    from bestiary.sample_archive.server import start_in_thread
    from tests.conftest import sample_taxonomy
    server, _, url = start_in_thread(seed=7)
    cfg = write(tmp_path, {"out": str(tmp_path / "out"), "taxonomy": sample_taxonomy(),
                           "sources": [{"name": "gbif", "base_url": url, "per_page": 3, "max_pages": 1,
                                        "queries": [{"mediaType": "Sound"}]}]})
    try:
        for stage in ("crawl", "enrich"):
            res = here(stage, cfg)
            assert res.returncode == 0, res.stderr
    finally:
        server.shutdown()
        server.server_close()
    res = here("caption", cfg)
    assert res.returncode == 0, res.stderr
    import pyarrow.parquet as pq
    assert pq.read_table(tmp_path / "out" / "catalog" / "captions").num_rows > 0
    for stage in ("crawl", "shard"):
        res = here(stage, cfg, "--force")
        assert res.returncode == 2 and "cannot reach gbif" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_crawl_gbif_from_the_command_line(tmp_path, archive_server):
    _, url = archive_server
    res = run("crawl", "--source", "gbif", "--base-url", url, "--query", "mediaType=Sound", "--out", str(tmp_path / "g"))
    assert res.returncode == 0, res.stderr
    import pyarrow.parquet as pq
    rows = pq.read_table(tmp_path / "g" / "catalog" / "recordings").to_pylist()
    assert rows and {r["source"] for r in rows} == {"gbif"}
    res = run("crawl", "--source", "inaturalist", "--base-url", url, "--query", "{broken", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "not valid JSON" in res.stderr and "Traceback" not in res.stderr
