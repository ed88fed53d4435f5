"""A hostile archive and a careless user: every case ends with exit 0 (the build finishes, every record in a
sample or in rejects with a reason) or exit 2 (a config error, one line, before any work); never a traceback,
a hang or a silent loss.  The archive is the sample server with its hostile faults."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from bestiary.pipelines import io
from tests.conftest import TEST_KEY, tiny_config

HOSTILE_HTTP = {"read_timeout": 3, "connect_timeout": 2, "retries": 1, "body_retries": 1, "backoff": 0.01,
                "min_download_bps": 4000, "slow_grace_s": 1.0, "download_deadline_s": 30}


def cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "bestiary.pipelines.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "XC_API_KEY": TEST_KEY}, cwd=cwd)


def write_cfg(path, cfg) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def rejects_of(out) -> dict[str, dict]:
    return {r["key"]: r for r in io.read_rows(os.path.join(out, "rejects"))}


def owls(state, archive="xc"):
    genera = {"Strix", "Bubo", "Athene"}
    if archive == "xc":
        return [r for r in state.archive.xc if r.species.genus in genera and "nd" not in r.license]
    return [s for o in state.archive.inat if o.species.genus in genera for s in o.sounds if s.license]


@pytest.mark.timeout(900)
def test_hostile_media_end_as_rejects_and_the_build_finishes(archive_server, tmp_path):
    state, url = archive_server
    xc, inat = owls(state), owls(state, "inat")
    patches = {("xc", xc[0].id): {"file": "../../etc/passwd"}, ("xc", xc[1].id): {"file": "/etc/passwd"},
               ("xc", xc[2].id): {"file": "file:///etc/passwd"}}
    media = {("xc", xc[3].id): "redirect_file", ("xc", xc[4].id): "redirect_loop", ("xc", xc[5].id): "trickle",
             ("inat", inat[0].id): "gzip_cut"}
    expected = {f"xeno-canto:{xc[0].id}": "bad_url", f"xeno-canto:{xc[1].id}": "bad_url",
                f"xeno-canto:{xc[2].id}": "bad_url", f"xeno-canto:{xc[3].id}": "bad_redirect",
                f"xeno-canto:{xc[4].id}": "redirect_loop", f"xeno-canto:{xc[5].id}": "download_too_slow",
                f"inaturalist:sound-{inat[0].id}": "truncated_encoding"}
    state.record_patches.update(patches)
    state.media_faults.update(media)
    out = str(tmp_path / "out")
    try:
        res = cli("build", write_cfg(tmp_path / "cfg.yaml", tiny_config(url, out, http=HOSTILE_HTTP)))
    finally:
        for k in patches:
            state.record_patches.pop(k, None)
        for k in media:
            state.media_faults.pop(k, None)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    rejects = rejects_of(out)
    assert {k: rejects[k]["reason"] for k in expected} == expected
    stats = io.read_json(os.path.join(out, "stats.json"))
    assert stats["accounting"]["balanced"] and stats["images"]["balanced"]
    from bestiary.pipelines.cache import MediaCache
    gz_url = next(r["media_url"] for r in io.read_rows(os.path.join(out, "catalog", "recordings"))
                  if r["key"] == f"inaturalist:sound-{inat[0].id}")
    assert MediaCache(os.path.join(out, "cache", "media")).lookup(gz_url) is None  # the cut body never cached
    assert not [p for p in os.listdir(os.path.join(out, "cache", "media", "blobs")) if p.startswith("etc")]


@pytest.mark.timeout(600)
def test_hostile_listings_are_bounded_and_every_record_accounted(archive_server, tmp_path):
    """Xeno-canto's numPages always one more with the last page repeated, Macaulay's cursor cycling A -> B
    -> A, an iNaturalist observation with a null id: the crawl ends, each partition with a reject naming
    its bound, the null-id record unreadable, nothing else lost."""
    state, url = archive_server
    obs = next(o for o in state.archive.inat if o.species.genus in {"Strix", "Bubo", "Athene"} and o.sounds)
    state.record_patches[("inat", obs.id)] = {"id": None}
    state.add_faults("xc_recordings", "endless_pages*")
    state.add_faults("ml_search", "cursor_cycle*")
    out = str(tmp_path / "out")
    cfg = tiny_config(url, out, http=HOSTILE_HTTP)
    cfg["sources"][0]["queries"] = ["gen:Strix"]
    try:
        res = cli("crawl", write_cfg(tmp_path / "cfg.yaml", cfg), timeout=300)
    finally:
        state.record_patches.pop(("inat", obs.id), None)
        state.faults.pop("xc_recordings", None)
        state.faults.pop("ml_search", None)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "page_repeated" in res.stderr
    rejects = io.read_rows(os.path.join(out, "work", "rejects-crawl"))
    reasons = {r["key"]: r["reason"] for r in rejects}
    assert reasons["partition:xeno-canto-q000"] == "page_repeated"
    assert reasons["partition:macaulay-q000"] == "cursor_cycle"
    assert any(k.startswith("inaturalist:") and v == "unparseable_record" for k, v in reasons.items())
    pages = os.listdir(os.path.join(out, "raw", "xeno-canto-q000"))
    assert len(pages) <= 3  # bounded: the repeated page is not kept


@pytest.mark.timeout(600)
def test_one_record_id_with_two_contents_is_reported(archive_server, tmp_path):
    state, url = archive_server
    state.add_faults("xc_recordings", "conflict*")
    out = str(tmp_path / "out")
    cfg = tiny_config(url, out)
    cfg["sources"] = cfg["sources"][:1]
    cfg["sources"][0].update(queries=["grp:birds"], per_page=50)
    try:
        res = cli("crawl", write_cfg(tmp_path / "cfg.yaml", cfg), timeout=300)
    finally:
        state.faults.pop("xc_recordings", None)
    assert res.returncode == 0, res.stderr[-3000:]
    conflicts = [r for r in io.read_rows(os.path.join(out, "work", "rejects-crawl")) if r["reason"] == "conflicting_versions"]
    assert conflicts and "scientific_name" in conflicts[0]["detail"] and "license" in conflicts[0]["detail"]
    kept = {r["key"] for r in io.read_rows(os.path.join(out, "catalog", "recordings"))}
    assert conflicts[0]["key"].split("#")[0] in kept  # one version kept, the other reported


@pytest.mark.timeout(600)
def test_one_writer_per_output(archive_server, tmp_path):
    _, url = archive_server
    out = tmp_path / "out"
    out.mkdir()
    cfg = write_cfg(tmp_path / "cfg.yaml", tiny_config(url, str(out)))
    lock = out / ".bestiary.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    res = cli("crawl", cfg)
    assert res.returncode == 2 and "is being built by pid" in res.stderr and "Traceback" not in res.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    res = cli("crawl", cfg)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "taking over the lock" in res.stderr and not lock.exists()


@pytest.mark.timeout(900)
def test_a_second_config_into_one_output_is_refused_or_replaces_the_shards(tiny_build, archive_server, tmp_path):
    import shutil
    cfg, _ = tiny_build
    _, url = archive_server
    out = tmp_path / "out"
    shutil.copytree(cfg.out, out)
    (out / "shards" / "train-000000.tar.tmp-4242").write_bytes(b"half a tar")   # a killed run's leftover
    other = tiny_config(url, str(out), shards={"samples_per_shard": 8, "min_shards_per_split": 2})
    res = cli("build", write_cfg(tmp_path / "other.yaml", other))
    assert res.returncode == 2 and "holds shards of another config (shards differ)" in res.stderr
    res = cli("build", write_cfg(tmp_path / "other.yaml", other), "--force")
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = io.read_json(str(out / "shards" / "manifest.json"))
    import webdataset as wds
    keys = [s["__key__"] for sh in manifest["shards"] for s in wds.WebDataset(str(out / "shards" / sh["file"]),
                                                                              shardshuffle=False)]
    assert len(keys) == len(set(keys)) == sum(s["samples"] for s in manifest["shards"])   # no old shard listed
    assert {p for p in os.listdir(out / "shards") if p.endswith(".tar")} == {s["file"] for s in manifest["shards"]}
    assert not [p for p in os.listdir(out / "shards") if ".tmp" in p]
    assert cli("verify", str(out)).returncode == 0


def _bomb() -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        lines.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\nout: x\nsources: []\n"


CONFIG_CASES = [
    ("out_is_a_file", lambda d, u: (_cfg(u, str(d / "afile")), []), "is a file"),
    ("out_under_a_file", lambda d, u: (_cfg(u, str(d / "afile" / "sub")), []), "is under a file"),
    ("out_unwritable", lambda d, u: (_cfg(u, "/proc/bestiary-out"), []), "cannot write to out"),
    ("out_empty", lambda d, u: (_cfg(u, ""), []), "'out'"),
    ("set_on_a_list_yaml", lambda d, u: ("- a\n- b\n", ["--set", "out=x"]), "not a YAML mapping"),
    ("set_on_empty_yaml", lambda d, u: ("", ["--set", "out=x"]), "not a YAML mapping"),
    ("set_under_a_value", lambda d, u: (_cfg(u, str(d / "o")), ["--set", "out.sub=1"]), "is a value, not a mapping"),
    ("set_list_index", lambda d, u: (_cfg(u, str(d / "o")), ["--set", "sources.0.base_url=http://127.0.0.1:1"]),
     "cannot reach xeno-canto"),
    ("set_bad_index", lambda d, u: (_cfg(u, str(d / "o")), ["--set", "sources.5.base_url=x"]), "not an index"),
    ("base_url_with_a_path", lambda d, u: (_cfg(u + "/api/3", str(d / "o")), []), "answers 404"),
    ("xeno_canto_without_key_env", lambda d, u: (_cfg(u, str(d / "o"), key=False), []), "needs an API key"),
    ("alias_bomb", lambda d, u: (_bomb(), []), "more than"),
    ("huge_yaml", lambda d, u: ("out: x\n" + "# " + "x" * 2_000_000 + "\n", []), "is not a build config"),
]


def _cfg(url: str, out: str, key: bool = True) -> str:
    src = {"name": "xeno-canto", "base_url": url, "queries": ["gen:Strix"]}
    if key:
        src["api_key_env"] = "XC_API_KEY"
    return yaml.safe_dump({"out": out, "sources": [src]})


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_careless_configs_get_one_line_and_exit_2(archive_server, tmp_path, case):
    _, url = archive_server
    name, make, needle = case
    (tmp_path / "afile").write_text("I am a file")
    text, extra = make(tmp_path, url)
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    res = cli("build", str(path), *extra, timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and len(lines) == 1 and needle in lines[0], res.stderr


def test_a_binary_config_and_bad_queries_get_one_line(archive_server, tmp_path):
    _, url = archive_server
    binary = tmp_path / "cfg.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    res = cli("build", str(binary), timeout=120)
    assert res.returncode == 2 and "not a text file" in res.stderr and "Traceback" not in res.stderr
    for query, needle in (("sounds", "key=value"), ("{broken", "not valid JSON")):
        res = cli("crawl", "--source", "inaturalist", "--base-url", url, "--query", query, "--out",
                  str(tmp_path / "c"), timeout=120)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
