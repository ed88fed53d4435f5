"""Training on the tiny build's shards: the loader, a few real steps, a checkpoint, the evaluation."""
import os

import pytest
import torch

from bestiary.training.data import DataConfig, make_loader, make_pipeline
from bestiary.training.encoders import ModelConfig, TriModal
from bestiary.training.evaluate import evaluate, format_table
from bestiary.training.losses import info_nce, trimodal_loss
from bestiary.training.data import read_manifest
from bestiary.training.train import TrainConfig, load_model, tokenizer_for, train


def test_info_nce_prefers_aligned_pairs():
    a = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(2.0)
    assert info_nce(a, a, scale) < info_nce(a, a.roll(1, 0), scale)


def val(x: torch.Tensor) -> float:
    return float(x.detach())


def test_samples_without_an_image_leave_only_the_image_terms():
    from bestiary.training.losses import taxonomy_targets
    emb = {k: torch.nn.functional.normalize(torch.randn(6, 16), dim=-1).requires_grad_() for k in ("audio", "image", "text")}
    scale = torch.tensor(2.0)
    has = torch.tensor([True, False, True, True, False, True])
    loss, parts = trimodal_loss(emb, scale, has_image=has)
    assert parts["audio_text"] == pytest.approx(val(info_nce(emb["audio"], emb["text"], scale)))
    assert parts["audio_image"] == pytest.approx(val(info_nce(emb["audio"][has], emb["image"][has], scale)))
    assert parts["image_text"] == pytest.approx(val(info_nce(emb["image"][has], emb["text"][has], scale)))
    loss.backward()
    assert emb["image"].grad[~has].abs().sum() == 0 and emb["image"].grad[has].abs().sum() > 0
    # soft targets are cut to the rows with an image and renormalised
    t = taxonomy_targets(list("aabbcc"), list("aabbcc"), list("FFFFGG"))
    _, soft = trimodal_loss(emb, scale, targets=t, has_image=has)
    assert set(soft) == {"audio_text", "audio_image", "image_text"}
    # under two rows with an image the image terms are skipped, and the loss still backpropagates
    image_pairs = {("audio", "image"): 1.0, ("image", "text"): 1.0}
    loss, parts = trimodal_loss(emb, scale, image_pairs, has_image=torch.tensor([True] + [False] * 5))
    assert parts == {} and val(loss) == 0.0 and loss.requires_grad


def test_taxonomy_targets_soften_relatives_only():
    from bestiary.training.losses import soft_info_nce, taxonomy_targets
    t = taxonomy_targets(["a x", "a y", "b z", "c w"], ["a", "a", "b", "c"], ["F", "F", "F", "G"])
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert t[0, 0] == 1 / 1.75 and t[0, 1] == 0.5 / 1.75 and t[0, 2] == 0.25 / 1.75 and t[0, 3] == 0
    assert t[3, 3] == 1 and t[3, :3].sum() == 0  # a stranger keeps a one-hot target
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(1.5)
    strangers = taxonomy_targets(list("pqrs"), list("pqrs"), list("pqrs"))
    assert torch.allclose(soft_info_nce(a, b, scale, strangers), info_nce(a, b, scale))


def test_few_steps_lower_the_loss(tiny_build):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    torch.manual_seed(0)
    tok = tokenizer_for(shards, read_manifest(shards))   # the build's subword tokenizer, beside the manifest
    model = TriModal(ModelConfig(embed_dim=64, width=16, vocab_size=len(tok.vocab), max_len=tok.max_len))
    batch = next(iter(make_loader(DataConfig(shards, ("train",), batch_size=8, workers=0))))
    assert batch["audio"].shape == (8, 480000) and batch["image"].shape == (8, 3, 64, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        emb = {"audio": model.encode_audio(batch["audio"]), "image": model.encode_image(batch["image"]),
               "text": model.encode_text(tok.encode(batch["text"]))}
        loss, parts = trimodal_loss(emb, model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"audio_text", "audio_image", "image_text"}
    assert losses[-1] < losses[0] * 0.8


def test_train_writes_a_checkpoint_and_eval_reports_with_chance(tiny_build, tmp_path):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    tcfg = TrainConfig(shards=shards, out=str(tmp_path / "run"), steps=6, batch_size=8, workers=1, log_every=2,
                       checkpoint_every=3, model=ModelConfig(embed_dim=32, width=16))
    result = train(tcfg, progress=False)
    assert result["steps"] == 6 and os.path.exists(result["checkpoint"])
    with open(tmp_path / "run" / "log.csv") as fh:
        assert len(fh.read().splitlines()) == 1 + 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6]
    assert "train/data_wait" in events.Tags()["scalars"]
    model, tok, state = load_model(result["checkpoint"])
    assert state["step"] == 6 and model.cfg.embed_dim == 32
    again = train(tcfg, resume=True, progress=False)  # already at the last step: nothing more to do
    assert again["steps"] == 6 and again["first_loss"] is None
    report = evaluate(result["checkpoint"], shards)
    seen = report["zero_shot"]["seen"]["taxonomy_common"]
    assert 0 <= seen["top1"] <= seen["top5"] <= 1 and seen["chance_top1"] == 1 / seen["classes"]
    assert "unseen" in report["zero_shot"]
    directions = {k.rsplit("_", 1)[0] for k in report["retrieval"]["seen"]}
    assert directions == {"audio_to_image", "image_to_audio", "audio_to_text", "text_to_audio", "image_to_text",
                          "text_to_image"}
    assert {k.rsplit("_", 1)[1] for k in report["retrieval"]["seen"]} == {"species", "genus", "family"}
    fam = report["retrieval"]["seen"]["audio_to_image_family"]
    assert fam["candidates"] == 1 and fam["top1"] == 1.0  # one family (Strigidae): trivially right, chance 1
    assert "chance" in format_table(report)


def test_embed_and_classify_a_folder(tiny_build, tmp_path):
    import shutil
    import pyarrow.parquet as pq
    from bestiary.training.inference import classify, embed_files, list_media, write_embeddings
    from tests.conftest import fixture_path
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    result = train(TrainConfig(shards=shards, out=str(tmp_path / "run"), steps=2, batch_size=4, workers=0,
                               model=ModelConfig(embed_dim=32, width=16)), progress=False)
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(fixture_path("audio", "pykanto_great_tit_2021-B32-0415_05-11.wav"), folder / "tit.wav")
    shutil.copy(fixture_path("audio", "pykanto_bengalese_finch_348.wav"), folder / "finch.wav")
    (folder / "broken.mp3").write_bytes(b"not audio")
    from PIL import Image
    Image.new("RGB", (120, 90), (10, 200, 30)).save(folder / "photo.jpg")
    rows, errors = embed_files(result["checkpoint"], list_media(str(folder)))
    assert sorted(r["modality"] for r in rows) == ["audio", "audio", "image"]
    assert errors == [{"path": str(folder / "broken.mp3"), "reason": "undecodable_audio"}]
    write_embeddings(rows, str(tmp_path / "emb.parquet"))
    table = pq.read_table(tmp_path / "emb.parquet")
    assert table.num_rows == 3 and len(table.column("embedding")[0].as_py()) == 32
    ranked, _ = classify(result["checkpoint"], list_media(str(folder)), ["Strix aluco", "Bubo bubo", "Athene noctua"],
                         top=3)
    assert len(ranked) == 2
    for r in ranked:
        scores = [x["score"] for x in r["ranking"]]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-3


def test_too_few_shards_for_the_readers_is_a_clear_error(tiny_build, monkeypatch):
    cfg, _ = tiny_build
    monkeypatch.setenv("WORLD_SIZE", "64")
    with pytest.raises(ValueError, match="shards for 64 rank"):
        make_pipeline(DataConfig(os.path.join(cfg.out, "shards"), ("train",), workers=2))


def test_biovita_stage_one_moves_audio_only_then_stage_two_moves_all(tiny_build, tmp_path):
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    tiny = ModelConfig(embed_dim=32, width=16)
    base = train(TrainConfig(shards=shards, out=str(tmp_path / "base"), steps=2, batch_size=4, workers=0, model=tiny),
                 progress=False)
    one = train(TrainConfig(shards=shards, out=str(tmp_path / "one"), steps=3, batch_size=4, workers=0, model=tiny,
                            stage="audio", init=base["checkpoint"], pair_weights={"audio_text": 1.0,
                                                                                 "audio_image": 1.0,
                                                                                 "image_text": 0.0}), progress=False)
    before = torch.load(base["checkpoint"])["model"]
    after = torch.load(one["checkpoint"])["model"]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("audio.", "audio_proj.")) for k in moved)
    assert any(k.startswith("audio_proj.") for k in moved)
    two = train(TrainConfig(shards=shards, out=str(tmp_path / "two"), steps=2, batch_size=4, workers=0, model=tiny,
                            stage="joint", init=one["checkpoint"]), progress=False)
    final = torch.load(two["checkpoint"])["model"]
    assert any(not torch.equal(after[k], final[k]) for k in after if k.startswith("image."))
    with pytest.raises(ValueError, match="stage"):
        train(TrainConfig(shards=shards, out=str(tmp_path / "bad"), steps=1, model=tiny, stage="text"), progress=False)
