import numpy as np
import soundfile
import torch

from codec.train.checkpoint import latest_checkpoint
from codec.train.config import DataConfig, TrainConfig
from codec.train.trainer import train
from codec.weights import load

from conftest import tiny_config


def test_train_resume_and_load(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        soundfile.write(data / f"{i}.wav", np.random.randn(4000 + 1000 * i).astype(np.float32) * 0.1, 16000)
    config = TrainConfig(model=tiny_config(), data=DataConfig(train=str(data), crop_seconds=0.3, batch_size=2),
                         steps=2, checkpoint_every=1, warmup_steps=1, out_dir=str(tmp_path / "run"))
    weights = train(config)
    first = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert first.name == "step-00000002"
    config.steps = 3
    train(config)  # resumes at step 2 and runs one more
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000003"
    model = load(weights)
    assert model.encode(torch.zeros(1, 800)).shape == (1, 3, 100)
