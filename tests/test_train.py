import numpy as np
import soundfile
import torch

from codec.train.checkpoint import latest_checkpoint
from codec.train.config import DataConfig, DiscriminatorConfig, TrainConfig
from codec.train.trainer import train
from codec.weights import load

from conftest import tiny_config


def tiny_run(tmp_path, **overrides) -> TrainConfig:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for i in range(3):
        soundfile.write(data / f"{i}.wav", np.random.randn(4000 + 1000 * i).astype(np.float32) * 0.1, 16000)
    config = TrainConfig(model=tiny_config(), data=DataConfig(train=str(data), valid=str(data), valid_files=1,
                                                             crop_seconds=0.3, batch_size=2),
                         steps=2, checkpoint_every=1, valid_every=2, warmup_steps=1, out_dir=str(tmp_path / "run"))
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def test_train_resume_and_load(tmp_path):
    config = tiny_run(tmp_path)
    weights = train(config)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000002"
    config.steps = 3
    train(config)  # resumes at step 2 and runs one more
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000003"
    model = load(weights)
    assert model.encode(torch.zeros(1, 800)).shape == (1, 3, 100)
    assert list((tmp_path / "run" / "logs").iterdir())


def test_train_with_discriminators(tmp_path):
    config = tiny_run(tmp_path, discriminator=DiscriminatorConfig(periods=[2, 3], scales=[1], stft_windows=[256],
                                                                  width=0.1, loss="least_squares"))
    train(config)
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert {p.name for p in checkpoint.iterdir()} >= {
        "codec.safetensors", "ema.safetensors", "discriminators.safetensors",
        "codec.optimizer.safetensors", "discriminators.optimizer.safetensors"}
