"""The CUDA paths (bf16 autocast, pinned batches, non-blocking copies): run where a GPU is, skipped elsewhere."""
import os

import pytest
import torch

from bestiary.training.config import ModelConfig, TrainConfig
from bestiary.training.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def test_bf16_training_on_the_gpu_lowers_the_loss_and_checkpoints(tiny_build, tmp_path):
    cfg, _ = tiny_build
    result = train(TrainConfig(shards=os.path.join(cfg.out, "shards"), out=str(tmp_path / "run"), steps=8,
                               batch_size=8, workers=2, precision="bf16", log_every=2, checkpoint_every=8,
                               model=ModelConfig(embed_dim=64, width=32)), progress=False)
    assert result["steps"] == 8 and result["last_loss"] < result["first_loss"]
    state = torch.load(result["checkpoint"], map_location="cpu")
    assert all(v.device.type == "cpu" for v in state["model"].values())
