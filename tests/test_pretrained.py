"""Pretrained encoders from local folders (tiny random models written here by transformers' save_pretrained):
the loading path, training on the shards and reloading a checkpoint, with the hub switched off."""
from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from bestiary.training.encoders import ModelConfig, TriModal  # noqa: E402
from bestiary.training.evaluate import evaluate  # noqa: E402
from bestiary.training.train import TrainConfig, load_model, train  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Three folders as a user would have them: CLAP audio, CLIP vision, a RoBERTa-style text encoder."""
    root = tmp_path_factory.mktemp("weights")
    T = transformers
    audio = T.ClapAudioConfig(hidden_size=64, patch_embeds_hidden_size=32, depths=[1, 1], num_attention_heads=[2, 2],
                              projection_dim=16, window_size=8, spec_size=256, num_mel_bins=64)
    T.ClapAudioModelWithProjection(audio).save_pretrained(root / "clap")
    T.ClapFeatureExtractor().save_pretrained(root / "clap")
    vision = T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8, projection_dim=16)
    T.CLIPVisionModelWithProjection(vision).save_pretrained(root / "clip")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    bpe.train_from_iterator(["the sound of a tawny owl calling", "strigidae strix bubo athene owl"],
                            tokenizers.trainers.BpeTrainer(vocab_size=80, special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    fast = T.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                     eos_token="</s>")
    fast.save_pretrained(root / "roberta")
    T.RobertaModel(T.RobertaConfig(vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=80,
                                   pad_token_id=fast.pad_token_id)).save_pretrained(root / "roberta")
    return root


def test_missing_weights_are_a_clear_error_never_a_download(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        TriModal(ModelConfig(audio_encoder="clap", audio_weights=str(tmp_path / "nothing")))
    with pytest.raises(ValueError, match="known: cnn, clap"):
        TriModal(ModelConfig(audio_encoder="htsat"))


def test_pretrained_towers_train_and_reload(tiny_build, weights, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg, _ = tiny_build
    shards = os.path.join(cfg.out, "shards")
    model = ModelConfig(embed_dim=16, audio_encoder="clap", image_encoder="clip", text_encoder="hf",
                        audio_weights=str(weights / "clap"), image_weights=str(weights / "clip"),
                        text_weights=str(weights / "roberta"))
    tcfg = TrainConfig(shards=shards, out=str(tmp_path / "run"), steps=2, batch_size=4, workers=0, checkpoint_every=2,
                       augment=False, shuffle_buffer=0, model=model)
    before = transformers.ClapAudioModelWithProjection.from_pretrained(weights / "clap").state_dict()
    result = train(tcfg, progress=False)
    assert result["steps"] == 2 and all(torch.isfinite(torch.tensor(result["losses"])))
    loaded, tok, _ = load_model(result["checkpoint"])
    assert type(loaded.audio).__name__ == "ClapAudio" and type(loaded.text).__name__ == "HFText"
    assert tok.encode(["a tawny owl"]).shape == (1, tok.max_len)
    trained = {k.removeprefix("model."): v for k, v in loaded.audio.state_dict().items()}
    assert any(not torch.equal(before[k], trained[k]) for k in before if k in trained)  # fine-tuned, not frozen
    report = evaluate(result["checkpoint"], shards)
    assert report["zero_shot"]["seen"]["taxonomy"]["classes"] >= 2
