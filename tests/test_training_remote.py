"""Training as on a cluster: shards and checkpoints over HTTP and S3, a typed manifest that refuses a model
trained on other audio, a shipped subword tokenizer, configs from YAML, and exports others can load."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from bestiary.training.config import ModelConfig, TrainConfig
from bestiary.training.data import read_manifest, shard_urls
from bestiary.training.train import train
from tests.conftest import BUCKET, static_server

TINY = ModelConfig(embed_dim=32, width=16)


def run(shards: str, out: str, **kw) -> dict:
    cfg = TrainConfig(shards=shards, out=out, steps=10, batch_size=4, workers=0, checkpoint_every=5, log_every=5,
                      model=TINY, **kw)
    return train(cfg, progress=False)


@pytest.fixture(scope="module")
def local_run(tiny_build, tmp_path_factory):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    return shards, run(shards, str(tmp_path_factory.mktemp("local") / "run"))


@pytest.mark.timeout(600)
def test_training_from_http_equals_training_from_disk_and_the_cache_reads_each_shard_once(local_run, tmp_path):
    shards, local = local_run
    server, url = static_server(shards)
    try:
        remote = run(url, str(tmp_path / "http"), shard_cache=str(tmp_path / "cache"))
        assert remote["losses"] == local["losses"]          # the same samples, in the same order, the same steps
        fetched = [p for p in server.requests_seen if p.endswith(".tar")]
        again = run(url, str(tmp_path / "http2"), shard_cache=str(tmp_path / "cache"))
        assert again["losses"] == local["losses"]
        assert [p for p in server.requests_seen if p.endswith(".tar")] == fetched   # the second run read the cache
        pattern = url + "/train-{000000..000001}.tar"
        assert [u.rsplit("/", 1)[1] for u in shard_urls(pattern, ("train",))] == ["train-000000.tar", "train-000001.tar"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(600)
def test_training_from_s3_equals_training_from_disk_and_checkpoints_go_there(local_run, moto_s3, tmp_path):
    import boto3
    shards, local = local_run
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    for name in os.listdir(shards):
        s3.upload_file(os.path.join(shards, name), BUCKET, f"train-test/shards/{name}")
    remote = run(f"s3://{BUCKET}/train-test/shards", f"s3://{BUCKET}/train-test/run")
    assert remote["losses"] == local["losses"]
    assert remote["checkpoint"] == f"s3://{BUCKET}/train-test/run/checkpoint.pt"
    from bestiary.training.evaluate import evaluate
    report = evaluate(remote["checkpoint"], f"s3://{BUCKET}/train-test/shards")   # a checkpoint read back from S3
    assert report["step"] == 10 and report["zero_shot"]


def test_the_build_ships_a_subword_tokenizer_that_never_says_unknown(tiny_build):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    manifest = read_manifest(shards)
    assert manifest.tokenizer == "tokenizer.json" and os.path.exists(os.path.join(shards, "tokenizer.json"))
    from bestiary.training.train import tokenizer_for
    tok = tokenizer_for(shards, manifest)
    unk = tok.tok.token_to_id("[UNK]")
    ids = tok.encode(["Zyzzyva quuxii, a species no caption named", "Ćwierkający łuszczak"])
    assert unk not in ids.tolist()[0] + ids.tolist()[1]
    assert len(tok.pieces("Strix aluco")) < len(tok.pieces("Zyzzyva quuxii"))   # the captions' names are pieces


def test_a_checkpoint_for_other_audio_is_one_clear_line(local_run, tmp_path):
    shards, local = local_run
    other = tmp_path / "shards32k"
    shutil.copytree(shards, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["sample_rate"] = 32000
    (other / "manifest.json").write_text(json.dumps(manifest))
    res = subprocess.run([sys.executable, "-m", "bestiary.pipelines.cli", "eval", "--checkpoint", local["checkpoint"],
                          "--shards", str(other)], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn" not in ln]
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "trained on 48000 Hz, 10 s clips; these shards hold 32000 Hz, 10 s clips" in lines[-1]


def test_checkpoints_load_with_plain_torch_load(local_run):
    _, local = local_run
    state = torch.load(local["checkpoint"])   # weights_only: tensors, numbers, strings and lists only
    assert state["step"] == 10 and state["model_config"]["sample_rate"] == 48000


EXPORTED = """
import json, sys
import numpy as np
from bestiary.training.inference import Model
m = Model.load(sys.argv[1])
wave = np.sin(np.arange(44100 * 3) / 44100 * 2 * np.pi * 2500).astype(np.float32) * 0.3
out = {"text": m.embed_texts(["Strix aluco", "a Tawny Owl calling"]).tolist(),
       "audio": m.embed_audio(wave, 44100).tolist(),
       "beam": any(k.startswith("apache_beam") for k in sys.modules),
       "pipelines": sorted(k for k in sys.modules if k.startswith("bestiary.pipelines"))}
print(json.dumps(out))
"""


def test_an_export_loads_in_a_fresh_process_and_embeds_as_the_checkpoint(local_run, tmp_path):
    _, local = local_run
    res = subprocess.run([sys.executable, "-m", "bestiary.pipelines.cli", "export", local["checkpoint"],
                          str(tmp_path / "exported")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(tmp_path / "exported"))
    got = subprocess.run([sys.executable, "-c", EXPORTED, str(tmp_path / "exported")], capture_output=True, text=True,
                         timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    fresh = json.loads(got.stdout.strip().splitlines()[-1])
    assert not fresh["beam"] and not fresh["pipelines"]       # inference needs no Beam and no pipeline code
    from bestiary.training.inference import Model
    ckpt = Model.load(local["checkpoint"])
    assert np.allclose(fresh["text"], ckpt.embed_texts(["Strix aluco", "a Tawny Owl calling"]), atol=1e-6)
    wave = np.sin(np.arange(44100 * 3) / 44100 * 2 * np.pi * 2500).astype(np.float32) * 0.3
    assert np.allclose(fresh["audio"], ckpt.embed_audio(wave, 44100), atol=1e-5)


def test_train_config_from_yaml_set_and_flags(tmp_path):
    from bestiary.pipelines.cli import parser, train_config
    (tmp_path / "run.yaml").write_text("shards: /data/shards\nout: /runs/a\nsteps: 50\nlr: 0.001\nmodel:\n  width: 24\n")
    a = parser().parse_args(["train", "--config", str(tmp_path / "run.yaml"), "--set", "model.embed_dim=128",
                             "--steps", "70"])
    cfg = train_config(a)
    assert (cfg.shards, cfg.steps, cfg.lr, cfg.model.width, cfg.model.embed_dim) == ("/data/shards", 70, 0.001, 24, 128)
    plain = train_config(parser().parse_args(["train", "--shards", "s", "--out", "o"]))
    assert plain == TrainConfig(shards="s", out="o")   # flags not given leave the one set of defaults
    from bestiary.schemas.config import ConfigError
    with pytest.raises(ConfigError, match="missing required field 'out'"):
        train_config(parser().parse_args(["train", "--shards", "s"]))
