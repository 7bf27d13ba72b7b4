"""The harmonic decoder: shapes, exact streaming, a phase-continuous band-limited oscillator, pitch training."""
import numpy as np
import pytest
import soundfile
import torch

from codec.config import HarmonicDecoderConfig
from codec.model import Codec
from codec.nn.harmonic import HarmonicHead, PitchPrediction
from codec.nn.streaming import streaming
from codec.train.config import DataConfig, TrainConfig
from codec.nn.world import WORLD_TO_HEAD
from codec.train.pitch import envelope_losses, pitch_errors, pitch_labels, pitch_losses, teacher_audio, world_labels
from codec.train.trainer import train
from codec.weights import load, load_weights, save_weights

from conftest import EXAMPLE, tiny_config


def harmonic_config():
    config = tiny_config(decoder="harmonic")
    config.harmonic = HarmonicDecoderConfig(dim=16, hidden_dim=32, num_layers=2, n_fft=16, f0_bins=40)
    return config


@pytest.fixture
def codec():
    torch.manual_seed(0)
    return Codec.from_config(harmonic_config()).eval()


def test_shapes_and_pitch_range(codec):
    audio = torch.randn(2, 1, 803) * 0.3
    output = codec(audio)
    assert output.audio.shape == (2, 1, 803) and torch.isfinite(output.audio).all()
    pitch = codec.decoder.pitch_prediction
    log_f0, voicing = pitch.log_f0, pitch.voicing
    assert log_f0.shape == voicing.shape == (2, 101)
    assert (log_f0.exp() >= 50 - 1e-3).all() and (log_f0.exp() <= 500 + 1e-3).all()


def test_bad_f0_range_is_refused():
    from codec.config import ModelConfig, from_dict
    from codec.errors import ConfigError
    with pytest.raises(ConfigError, match="f0_min"):
        from_dict(ModelConfig, {"decoder": "harmonic", "harmonic": {"f0_min": 400, "f0_max": 100}})


def test_chunked_decoding_equals_offline(codec):
    audio = torch.randn(2, 1, 8000) * 0.3
    codes = codec.encode(audio)
    offline = codec.decode(codes)
    for seed in range(3):  # random chunkings, from single frames up to 40
        sizes = torch.Generator().manual_seed(seed)
        pieces, start = [], 0
        with codec.stream_decoder() as stream:
            while start < codes.shape[-1]:
                size = int(torch.randint(1, 40, (1,), generator=sizes))
                pieces.append(stream.push(codes[..., start:start + size]))
                start += size
        streamed = torch.cat(pieces, -1)
        assert streamed.shape == offline.shape
        assert torch.allclose(streamed, offline, atol=1e-5), (streamed - offline).abs().max()


def test_streams_keep_their_own_oscillator_and_noise(codec):
    """Three streams started at different times, pushed together in batched calls with their own chunk sizes:
    each continues its own phase, last f0 and noise position, and equals its offline decoding."""
    codes = {i: codec.encode(torch.randn(1, 1, 400 + 80 * i) * 0.3) for i in range(3)}
    decoders = {i: codec.stream_decoder() for i in codes}
    audio = {i: [] for i in codes}
    size = {i: 1 + i for i in codes}  # frames a push
    for step in range(max(c.shape[-1] for c in codes.values()) + 2):
        pushes = {decoders[i]: c[..., (step - i) * size[i]:(step - i + 1) * size[i]] for i, c in codes.items()
                  if 0 <= (step - i) * size[i] < c.shape[-1]}
        for stream, piece in codec.decode_streams(pushes).items():
            audio[next(i for i, s in decoders.items() if s is stream)].append(piece)
    for i, c in codes.items():
        offline = codec.decode(c)
        streamed = torch.cat(audio[i], -1)
        assert streamed.shape == offline.shape
        assert (streamed - offline).abs().max() < 1e-5


def run_head(head, f0_hz, chunk=None):
    """Drive the oscillator alone with a given f0 track (B, F): excitation segments' first hops, concatenated."""
    if chunk is None:
        segments = head.excitation(f0_hz)
    else:
        with streaming(head, f0_hz.shape[0]):
            segments = torch.cat([head.excitation(f0_hz[:, s:s + chunk])
                                  for s in range(0, f0_hz.shape[1], chunk)], 1)
    return segments[..., :head.hop].reshape(f0_hz.shape[0], -1)


def test_oscillator_is_phase_continuous_across_chunks():
    head = HarmonicHead(4, 64, 32, 8000, 50.0, 500.0, 40)
    f0 = torch.linspace(100, 300, 60)[None]  # a glide: the ramp and the phase both carry over
    whole = run_head(head, f0)
    for chunk in (1, 7, 13):
        assert torch.allclose(run_head(head, f0, chunk), whole, atol=1e-5)
    # No jump where frames meet: the largest step between samples stays that of a smooth band-limited signal.
    steps = whole.diff(dim=-1).abs()
    boundary = steps[0, 31::32]
    assert boundary.max() <= steps.max() + 1e-6


def test_excitation_has_its_energy_at_the_harmonics_and_none_above_nyquist():
    rate, hop, f0 = 8000, 32, 330.0  # 12 harmonics below 4 kHz
    head = HarmonicHead(4, 64, hop, rate, 50.0, 500.0, 40)
    signal = run_head(head, torch.full((1, 250), f0))[0].double()
    spectrum = torch.fft.rfft(signal * torch.hann_window(len(signal), dtype=torch.float64)).abs() ** 2
    frequencies = torch.fft.rfftfreq(len(signal), 1 / rate)
    near = torch.zeros_like(frequencies, dtype=torch.bool)
    for k in range(1, int(rate / 2 / f0) + 1):
        near |= (frequencies - k * f0).abs() < 15
    assert spectrum[near].sum() / spectrum.sum() > 0.99
    # Each harmonic below Nyquist is there, with about the same power (unit amplitudes).
    peaks = torch.stack([spectrum[(frequencies - k * f0).abs() < 15].max() for k in range(1, 13)])
    assert peaks.min() > 0.5 * peaks.max()


def test_pitch_labels_and_losses_on_speech():
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    audio = torch.from_numpy(audio[:rate * 2])[None, None]
    hop = rate // 100
    labels = pitch_labels(audio, rate, hop, 200)
    voiced = labels[labels > 0]
    assert 0.3 < (labels > 0).float().mean() < 0.95 and 60 < voiced.median() < 400
    head = HarmonicHead(dim=4, n_fft=16, hop_length=8, sample_rate=8000, f0_min=50.0, f0_max=500.0, f0_bins=200)
    bins, voicing = head.bin_log_f0, (labels > 0).float() * 20 - 10

    def peaked_at(log_f0):  # logits 10 cents wide round each frame's log-f0
        return PitchPrediction(log_f0.double(), voicing,
                               -0.5 * ((bins.float() - log_f0[..., None]) / (10 / 1200 * np.log(2))) ** 2, bins)
    right, octave = peaked_at(labels.clamp(min=1).log()), peaked_at(labels.clamp(min=1).log() + np.log(2))
    assert pitch_losses(right, labels)["f0"] < 0.5 * pitch_losses(octave, labels)["f0"]
    assert pitch_losses(right, labels)["voicing"] < 1e-3
    assert pitch_losses(right, labels * 0)["f0"] == 0  # unvoiced frames teach f0 nothing
    errors = pitch_errors(octave, labels)
    assert errors["octave_errors"] == 1.0 and abs(errors["f0_cents"] - 1200) < 1e-2
    assert abs(errors["f0_median_cents"] - 1200) < 1e-2 and errors["voicing_errors"] == 0.0


def test_world_labels_and_the_envelope_loss():
    rate, hop, frames, bins = 16000, 160, 48, 65
    time = np.arange(frames * hop) / rate
    pulses = sum(np.cos(2 * np.pi * 150 * k * time) / k for k in range(1, 40) if 150 * k < rate / 2)
    noise = np.random.default_rng(0).standard_normal(frames * hop)
    audio = torch.from_numpy(np.stack([0.1 * pulses, 0.05 * noise])).float()[:, None]
    f0, harmonic, noise_envelope = world_labels(audio, rate, hop, frames, bins)
    assert harmonic.shape == noise_envelope.shape == (2, frames, bins)
    assert torch.equal(f0, pitch_labels(audio, rate, hop, frames))  # the same track as the pitch labels
    voiced = f0 > 0
    inner = slice(5, frames - 5)  # away from the edges, where the analysis sees half a window
    assert voiced[0, inner].all() and not voiced[1, inner].any()
    # the pulse train is mostly harmonic below 2 kHz; the noise is all noise, with no harmonic part at all
    low = slice(0, bins // 4)
    assert (harmonic[0, inner, low] > noise_envelope[0, inner, low]).float().mean() > 0.9
    assert (harmonic[1, inner] < -13).all() and (noise_envelope[1, inner] > -8).all()

    def prediction(log_harmonic, log_noise):
        zero = torch.zeros(2, frames)
        return PitchPrediction(zero.double(), zero, torch.zeros(2, frames, 4), torch.zeros(4), log_harmonic,
                               log_noise)
    shifted = prediction(harmonic + 2.0, noise_envelope - 1.0)  # a level per frame is the reconstruction's business
    assert envelope_losses(shifted, harmonic, noise_envelope, voiced) < 1e-5
    flattened = prediction((harmonic * 0).requires_grad_(), noise_envelope * 0)
    loss = envelope_losses(flattened, harmonic, noise_envelope, voiced)
    loss.backward()
    assert loss > 0.5 and flattened.log_harmonic.grad[0].abs().sum() > 0
    assert flattened.log_harmonic.grad[1].abs().sum() == 0  # unvoiced: the harmonic envelope is not asked


def test_f0_is_the_centre_of_the_strongest_bin():
    head = HarmonicHead(dim=4, n_fft=16, hop_length=8, sample_rate=8000, f0_min=50.0, f0_max=500.0, f0_bins=200)
    assert head.pitch.out_features == 201
    bins = head.bin_log_f0
    assert abs(float(bins[1] - bins[0]) * 1200 / np.log(2) - 20.03) < 0.01  # cents apart
    logits = torch.zeros(201)
    logits[80], logits[81], logits[-1] = 3.0, 2.9, 5.0  # the last output is the voicing logit
    with torch.no_grad():
        head.pitch.weight.zero_()
        head.pitch.bias.copy_(logits)
    pitch = head.predict_pitch(torch.zeros(1, 3, 4))
    assert pitch.bin_logits.shape == (1, 3, 200) and (pitch.voicing == 5).all()
    assert (pitch.log_f0 == bins[80]).all() and pitch.log_f0.dtype == torch.float64


def test_teacher_audio_is_the_head_driven_by_the_labels():
    torch.manual_seed(0)
    head = HarmonicHead(dim=4, n_fft=16, hop_length=8, sample_rate=8000, f0_min=50.0, f0_max=500.0, f0_bins=200)
    frames = 12
    f0 = torch.where(torch.arange(frames) < 6, 200.0, 0.0)[None].repeat(2, 1)
    harmonic, noise = torch.full((2, frames, 9), -1.0), torch.full((2, frames, 9), -3.0)
    harmonic[:, 6:] = -30.0  # unvoiced frames: no harmonic part
    own = head(torch.randn(2, 4, frames))
    prediction = head.prediction
    audio = teacher_audio(head, f0, harmonic, noise)
    assert audio.shape == own.shape and head.prediction is prediction and head.given_envelopes is None
    # what the head makes from the same envelopes as its own output (gate fully open, f0 given)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.copy_(torch.cat([harmonic[0, 0] + WORLD_TO_HEAD[0], noise[0, 0] + WORLD_TO_HEAD[1]]))
        head.pitch.weight.zero_()
        head.pitch.bias[-1] = 50.0  # voicing logit: the gate open
        head.given_f0 = f0
        voiced_part = head(torch.zeros(2, 4, frames))
    assert torch.allclose(audio[..., :48], voiced_part[..., :48], atol=1e-5)  # the voiced frames' samples
    assert not torch.allclose(audio, own)


def test_training_with_pitch_losses_then_weights_round_trip(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    for i in range(2):
        soundfile.write(data / f"{i}.wav", audio[i * rate:(i + 1) * rate], rate)
    config = TrainConfig(model=harmonic_config(), data=DataConfig(train=str(data), crop_seconds=0.5, batch_size=2),
                         steps=2, checkpoint_every=2, valid_every=2, warmup_steps=1, out_dir=str(tmp_path / "run"))
    from codec.train.trainer import Trainer
    trainer = Trainer(config)
    batch = torch.from_numpy(audio[rate:rate + 4000]).reshape(1, 1, -1).repeat(2, 1, 1)
    stats, _ = trainer.generator_step(batch, 0)
    assert {"f0", "voicing"} <= stats.keys() and stats["f0"] > 0 and stats["voicing"] > 0
    assert "envelope" not in stats  # off by default
    trainer.config.loss.envelope = 1.0
    assert trainer.generator_step(batch, 1)[0]["envelope"] > 0
    trainer.config.loss.envelope, trainer.config.loss.teacher = 0.0, 1.0
    teacher_stats, _ = trainer.generator_step(batch, 1)
    assert teacher_stats["mel"] != stats["mel"] and teacher_stats["f0"] > 0  # another target, the same pitch losses
    weights = train(config)
    model = load(weights)
    assert model.config.decoder == "harmonic"
    codes = model.encode(torch.from_numpy(audio[:4000])[None])
    resaved = tmp_path / "again.safetensors"
    save_weights(load_weights(weights, for_training=True), resaved)
    assert torch.equal(load(resaved).decode(codes), model.decode(codes))


def test_a_harmonic_decoder_may_start_from_an_istft_models_weights(tmp_path):
    from codec.train.runs import prepare
    torch.manual_seed(0)
    source = tmp_path / "istft.safetensors"
    save_weights(Codec.from_config(tiny_config(decoder="istft")), source)
    config = TrainConfig(model=harmonic_config(), data=DataConfig(train=str(EXAMPLE)), out_dir=str(tmp_path / "run"))
    config.model.harmonic.f0_max = 400.0  # harmonic settings are free to differ, as the decoder kind is
    prepare(config, init_weights=str(source))


def test_teacher_forced_f0_drives_the_oscillator_on_voiced_frames_only(codec):
    audio = torch.randn(1, 1, 800) * 0.3
    codes = codec.encode(audio)
    own = codec.decode(codes, 800)
    frames = codes.shape[-1]
    codec.decoder.head.given_f0 = torch.zeros(1, frames)  # all unvoiced: the f0 head drives it, as without labels
    assert torch.equal(codec.decode(codes, 800), own)
    given = torch.zeros(1, frames)
    given[:, frames // 2:] = 220.0
    codec.decoder.head.given_f0 = given
    forced = codec.decode(codes, 800)
    half = (frames // 2) * codec.hop_length  # frame f's segment starts at f hop
    assert torch.equal(forced[..., :half], own[..., :half]) and not torch.allclose(forced[..., half:], own[..., half:])


def test_a_teacher_forced_training_step_uses_the_labels_and_leaves_the_f0_head_in_charge_after(tmp_path):
    from codec.train.trainer import Trainer
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    config = TrainConfig(model=harmonic_config(), data=DataConfig(train=str(EXAMPLE), crop_seconds=0.5,
                                                                  batch_size=2),
                         teacher_forced_f0=True, out_dir=str(tmp_path / "run"))
    trainer = Trainer(config)
    head = trainer.codec.decoder.head
    seen = []
    original = head.excitation
    head.excitation = lambda f0: (seen.append(f0.clone()), original(f0))[1]
    batch = torch.from_numpy(audio[rate:rate + 4000]).reshape(1, 1, -1).repeat(2, 1, 1)
    stats, _ = trainer.generator_step(batch, 0)
    labels = pitch_labels(batch, config.model.sample_rate, trainer.codec.decoder.hop_length, seen[0].shape[1])
    voiced = labels > 0
    assert voiced.any() and torch.allclose(seen[0][voiced].float(), labels[voiced], rtol=1e-5)
    assert head.given_f0 is None and {"f0", "voicing"} <= stats.keys()
