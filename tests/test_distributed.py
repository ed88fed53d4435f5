"""Exact resume, and a 2-process torchrun (gloo, CPU) that matches one process on the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch
import webdataset as wds

from bestiary.training.data import DataConfig, Decode, collate, shard_urls
from bestiary.training.encoders import ModelConfig, TriModal
from bestiary.training.losses import taxonomy_targets, trimodal_loss
from bestiary.training.data import read_manifest
from bestiary.training.train import TrainConfig, lr_at, seed_all, tokenizer_for, train

TINY = ModelConfig(embed_dim=32, width=16)


def test_twenty_steps_equal_ten_a_resume_and_ten(tiny_build, tmp_path):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    common = dict(steps=20, batch_size=4, workers=0, checkpoint_every=10, log_every=5, model=TINY)
    straight = train(TrainConfig(shards=shards, out=str(tmp_path / "a"), **common), progress=False)
    first = train(TrainConfig(shards=shards, out=str(tmp_path / "b"), **common), progress=False, stop_at=10)
    assert first["steps"] == 10
    second = train(TrainConfig(shards=shards, out=str(tmp_path / "b"), **common), resume=True, progress=False)
    assert second["steps"] == 20
    a = torch.load(straight["checkpoint"])
    b = torch.load(second["checkpoint"])
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert straight["losses"][10:] == second["losses"]


def _samples_by_key(shards: str) -> dict:
    decode = Decode(DataConfig(shards, ("train",), augment=False))
    out = {}
    for s in wds.WebDataset(shard_urls(shards, ("train",)), shardshuffle=False):
        out[s["__key__"]] = decode(s)
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("taxonomy_loss", [False, True])
def test_two_ranks_see_disjoint_samples_and_match_one_process(tiny_build, tmp_path, taxonomy_loss):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    out = tmp_path / "ddp"
    with open(os.path.join(shards, "manifest.json")) as fh:
        smallest = min(x["samples"] for x in json.load(fh)["shards"] if x["split"] == "train")
    steps, per_rank = 3, max(1, min(4, smallest // 3))  # all within the first epoch: one shard per rank
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bestiary.pipelines.cli", "train", "--shards", shards, "--out", str(out), "--steps", str(steps),
           "--batch-size", str(per_rank), "--workers", "0", "--no-augment", "--shuffle-buffer", "0", "--log-keys", "--width", "16",
           "--embed-dim", "32", "--checkpoint-every", str(steps), "--seed", "0"] + \
        (["--taxonomy-loss"] if taxonomy_loss else [])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    logs = [[json.loads(line) for line in open(out / f"keys-rank{r}.jsonl")] for r in (0, 1)]
    seen = [{k for entry in log for k in entry["keys"]} for log in logs]
    assert seen[0] and seen[1] and not (seen[0] & seen[1])  # the ranks read disjoint samples
    assert all(len(set(e["keys"])) == len(e["keys"]) == per_rank for log in logs for e in log)
    # one process, the same global batches (rank 0's rows, then rank 1's), the same start
    samples = _samples_by_key(shards)
    seed_all(0)
    tok = tokenizer_for(shards, read_manifest(shards))
    model = TriModal(ModelConfig(**{**TINY.to_dict(), "vocab_size": len(tok.vocab), "max_len": tok.max_len}))
    tcfg = TrainConfig(shards=shards, out=str(tmp_path / "one"), steps=steps, batch_size=2 * per_rank, model=TINY)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr)
    for step in range(steps):
        batch = collate([samples[k] for k in logs[0][step]["keys"] + logs[1][step]["keys"]])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tcfg)
        emb = {"audio": model.encode_audio(batch["audio"]), "image": model.encode_image(batch["image"]),
               "text": model.encode_text(tok.encode(batch["text"]))}
        targets = taxonomy_targets(batch["species"], batch["genus"], batch["family"]) if taxonomy_loss else None
        loss, _ = trimodal_loss(emb, model.logit_scale, None, targets)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        assert loss.item() == pytest.approx(logs[0][step]["loss"], rel=1e-4, abs=1e-4)
        assert logs[1][step]["loss"] == pytest.approx(logs[0][step]["loss"], rel=1e-5)
    ddp = torch.load(out / "checkpoint.pt")["model"]
    for k, v in model.state_dict().items():
        # Adam divides by sqrt(v): a weight whose gradient is ~0 can step by up to lr on float noise alone,
        # so a few elements may differ by an lr-sized step; the rest must agree to 1e-4
        diff = (v - ddp[k]).abs()
        assert diff.max() <= 2 * tcfg.lr * steps and (diff > 1e-4).float().mean() <= 0.01, (k, diff.max())


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(400)
def test_two_nodes_train_as_one_node_with_the_same_global_batch(tiny_build, tmp_path):
    """Two torchrun agents (--nnodes 2, one rank each, c10d rendezvous on 127.0.0.1, gloo) against one agent
    with two ranks: the same samples per rank and the same losses, step by step."""
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    args = ["-m", "bestiary.pipelines.cli", "train", "--shards", shards, "--steps", "3", "--batch-size", "2",
            "--workers", "0", "--no-augment", "--shuffle-buffer", "0", "--log-keys", "--width", "16",
            "--embed-dim", "32", "--checkpoint-every", "3", "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *args, "--out", str(tmp_path / "one")], capture_output=True, text=True, timeout=240, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    port = _free_port()
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "bestiary",
                                "--max_restarts", "0", *args, "--out", str(tmp_path / "two")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        results = [a.communicate(timeout=240) for a in agents]
    finally:
        for a in agents:
            a.kill()
    assert all(a.returncode == 0 for a in agents), [r[1][-2000:] for r in results]
    logs = {run: [[json.loads(line) for line in open(tmp_path / run / f"keys-rank{r}.jsonl")] for r in (0, 1)]
            for run in ("one", "two")}
    for r in (0, 1):
        assert [e["keys"] for e in logs["two"][r]] == [e["keys"] for e in logs["one"][r]]
        assert [e["loss"] for e in logs["two"][r]] == pytest.approx([e["loss"] for e in logs["one"][r]], rel=1e-5)
