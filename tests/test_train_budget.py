"""A run on a wall-clock budget, its learning curve, and the compressed complex STFT loss."""
import importlib.util
import json
import math

import torch

from codec.train.losses import CompressedSTFTLoss
from codec.train.trainer import TrainingClock, train

from test_train import tiny_run


def test_compressed_stft_loss_sees_phase_that_magnitude_losses_miss():
    torch.manual_seed(0)
    audio = torch.randn(1, 4000)
    spectrum = torch.stft(audio, 320, 80, window=torch.hann_window(320), return_complex=True)
    # The same magnitudes with random phases: a log-magnitude loss at this resolution would barely move.
    scrambled = torch.polar(spectrum.abs(), torch.rand_like(spectrum.abs()) * 2 * math.pi)
    rephased = torch.istft(scrambled, 320, 80, window=torch.hann_window(320), length=4000)
    loss = CompressedSTFTLoss()
    assert loss(audio, audio).item() == 0
    assert loss(rephased, audio) > 10 * loss(audio * 1.01, audio)
    prediction = audio.clone().requires_grad_()
    loss(prediction + 0.01 * torch.randn_like(audio), audio).backward()
    assert torch.isfinite(prediction.grad).all()


def test_budget_sets_the_step_count_and_the_curve_is_written(tmp_path):
    config = tiny_run(tmp_path, steps=10_000, minutes=0.2, curve_every_minutes=0.05, checkpoint_every=10_000,
                      valid_every=10_000, curve_codebooks=[1, 3], threads=1)
    config.loss.complex_stft = 1.0
    train(config)
    points = [json.loads(line) for line in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()]
    last = points[-1]["step"]
    # stopped by the 12-second budget, not by `steps`, after the steps timed before the first plan (on a cold
    # machine the first curve point, which loads the scorers' models, can take most of the 12 s)
    assert TrainingClock.TIMED <= last < 10_000
    assert (tmp_path / "run" / "checkpoints" / f"step-{last:08d}").is_dir()  # the last step is saved
    assert points[0]["step"] == 0 and [p["step"] for p in points] == sorted(p["step"] for p in points)
    assert points[-1]["audio_hours"] > points[0]["audio_hours"] == 0
    kbps = {key.split("@")[1] for key in points[0] if "@" in key}
    assert len(kbps) == 2  # one column per codebook count
    assert all(math.isfinite(v) for p in points for k, v in p.items() if k.startswith("mel_distance"))
    if importlib.util.find_spec("distillmos"):  # the curve's MOS, where its package is installed (as in CI)
        assert all(1 <= p[f"distillmos@{rate}"] <= 5 for p in points for rate in kbps)
