"""The training loop's parts on their own: the EMA, the data (in memory and read from files), the batch order,
checkpoints under a kill, and the STFT discriminator's two inputs."""
import multiprocessing
import os

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file
from torch import nn

from codec.train.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from codec.train.data import AudioCrops, StepBatches
from codec.train.discriminators import Discriminators
from codec.train.ema import EMA


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.register_buffer("scale", torch.ones(()))


def test_ema_averages_parameters_copies_buffers_and_warms_up():
    model = Scaled()
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.scale.fill_(0.05)  # fitted to data once, as SimVQ's scale is
    ema.update(model)
    assert torch.allclose(ema.model.weight, torch.full((3,), 0.9))  # first decay (1 + 0) / (10 + 0) = 0.1
    assert ema.model.scale.item() == pytest.approx(0.05)  # copied, not averaged with the initial 1.0
    for _ in range(10_000):
        ema.update(model)
    assert torch.allclose(ema.model.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model)
    assert ema.model.weight[0].item() == pytest.approx(1.001, abs=1e-6)  # warmed up: the configured 0.999
    ema.restart()
    ema.update(model)
    assert ema.model.weight[0].item() == pytest.approx(0.1 * 1.001 + 0.9 * 2.0, abs=1e-5)


def test_ema_loads_a_checkpoint_written_before_its_warm_up():
    old = EMA(Scaled(), decay=0.999)
    state = {k: v for k, v in old.state_dict().items() if k != "updates"}
    ema = EMA(Scaled(), decay=0.999)
    ema.load_state_dict(state)
    model = Scaled()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.model.weight[0].item() == pytest.approx(0.001)


def test_a_short_run_exports_the_fitted_quantizer_scale(tmp_path):
    """The EMA of a run's first steps keeps what the first batch fitted (here SimVQ's latent scale), not a blend
    with the untrained value: blended, a short run's exported weights decoded far worse than its raw ones."""
    from test_train import tiny_run
    from codec.train.trainer import train
    train(tiny_run(tmp_path))
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    raw, ema = load_file(str(checkpoint / "codec.safetensors")), load_file(str(checkpoint / "ema.safetensors"))
    scales = [k for k in raw if k.endswith(".scale")]
    assert scales and all(raw[k].item() != 1.0 for k in scales)
    assert all(torch.equal(raw[k], ema[f"model.{k}"]) for k in scales)


@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i, (rate, seconds) in enumerate([(16000, 2.0), (44100, 1.3), (24000, 0.2), (22050, 3.0)]):
        path = tmp_path / f"{i}.wav"
        soundfile.write(path, (rng.standard_normal((int(rate * seconds), 2)) * 0.1).astype(np.float32), rate)
        paths.append(path)
    return paths


def test_crops_read_from_files_equal_crops_held_in_memory(clips):
    crop = 12000  # half a second at 24 kHz: the 0.2 s clip is repeated to fill it
    held = AudioCrops(clips, 24000, crop, seed=3)
    read = AudioCrops(clips, 24000, crop, seed=3, in_memory=False)
    assert not read.clips and torch.allclose(held.weights, read.weights, atol=1e-4)
    for item in range(40):
        a, b = held[item], read[item]
        assert a.shape == b.shape == (1, crop)
        assert torch.allclose(a, b, atol=1e-4), item


@pytest.mark.parametrize("in_memory", [True, False])
def test_files_recorded_above_16khz_can_be_drawn_more_often(clips, in_memory):
    """high_rate_weight multiplies the chance of a second of a file recorded above 16 kHz (the only ones with a
    band above 8 kHz); within each group, files keep their shares by duration."""
    plain = AudioCrops(clips, 24000, 2400, seed=0, in_memory=in_memory)
    weighted = AudioCrops(clips, 24000, 2400, seed=0, in_memory=in_memory, high_rate_weight=4.0)
    high = torch.tensor([rate > 16000 for rate in (16000, 44100, 24000, 22050)])
    share = lambda weights: float(weights[high].sum())  # noqa: E731
    assert share(plain.weights) == pytest.approx(4.5 / 6.5, abs=1e-3)   # by duration alone: 4.5 of 6.5 s
    assert share(weighted.weights) == pytest.approx(4 * 4.5 / (4 * 4.5 + 2.0), abs=1e-3)
    assert torch.allclose(weighted.weights[high] / weighted.weights[high].sum(),
                          plain.weights[high] / plain.weights[high].sum())


def test_a_data_loader_with_workers_gives_the_same_batches(clips):
    dataset = AudioCrops(clips, 24000, 2400, seed=0, in_memory=False)
    batches = StepBatches(2, 5, batch_size=3, rank=0, processes=1)
    alone = [torch.stack([dataset[i] for i in indices]) for indices in batches]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(alone, loader, strict=True))


def test_step_batches_give_each_process_its_own_items_from_the_resumed_step():
    assert list(StepBatches(3, 5, batch_size=2, rank=1, processes=2)) == [[14, 15], [18, 19]]
    assert list(StepBatches(3, 5, batch_size=2, rank=0, processes=2)) == [[12, 13], [16, 17]]
    assert len(StepBatches(3, 5, 2, 0, 1)) == 2


def _save_then_die_mid_save(folder: str) -> None:
    import codec.train.checkpoint as checkpoint
    model = nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(folder, 1, {"codec": model}, {"codec": optimizer})
    written = []
    real_save_file = checkpoint.save_file

    def dying(tensors, path, metadata=None):
        written.append(path)
        if len(written) == 2:
            os._exit(3)  # a kill between two files of one checkpoint: no cleanup runs
        real_save_file(tensors, path, metadata=metadata)

    checkpoint.save_file = dying
    with torch.no_grad():
        model.weight.fill_(7.0)
    save_checkpoint(folder, 2, {"codec": model}, {"codec": optimizer})


def test_a_kill_mid_save_leaves_the_previous_checkpoint_whole(tmp_path):
    folder = tmp_path / "checkpoints"
    process = multiprocessing.get_context("fork").Process(target=_save_then_die_mid_save, args=(str(folder),))
    process.start()
    process.join()
    assert process.exitcode == 3
    assert (folder / ".tmp-step-00000002").is_dir()  # the half-written one, under its temporary name
    latest = latest_checkpoint(folder)
    assert latest.name == "step-00000001"
    model = nn.Linear(4, 4)
    step, loaded = restore_checkpoint(latest, {"codec": model}, {"codec": torch.optim.Adam(model.parameters())})
    assert step == 1 and loaded == ["codec"] and not torch.all(model.weight == 7.0)
    save_checkpoint(folder, 2, {"codec": model}, {})  # the next save replaces the leftover
    assert latest_checkpoint(folder).name == "step-00000002" and not (folder / ".tmp-step-00000002").exists()


@pytest.mark.parametrize("spectrum, channels", [("complex", 2), ("magnitude", 1)])
def test_stft_discriminator_sees_the_spectrum_it_is_configured_for(spectrum, channels):
    discriminators = Discriminators(periods=[], scales=[], stft_windows=[256], width=0.25, stft_spectrum=spectrum)
    first = discriminators.members[0].stacks[0][0]
    assert first.in_channels == channels
    audio = (torch.randn(2, 1, 4000) * 0.1).requires_grad_()
    [(score, features)] = discriminators(audio)
    assert score.shape[0] == 2 and len(features) == 5 * 5 + 1
    score.mean().backward()
    assert audio.grad.abs().sum() > 0
