"""The WORLD codec: WORLD's analysis as latents, fitted codebooks, the harmonic head as synthesis."""
import numpy as np
import pytest
import soundfile
import torch

pyworld = pytest.importorskip("pyworld")

from codec.config import ModelConfig, QuantizerConfig, WorldConfig, from_dict  # noqa: E402
from codec.errors import ConfigError  # noqa: E402
from codec.metrics.quality import align, mel_distance  # noqa: E402
from codec.model import Codec  # noqa: E402
from codec.nn.world import WorldHead, aperiodicity_bands, fft_size  # noqa: E402
from codec.train.codebooks import fit_codebooks  # noqa: E402
from codec.train.config import DataConfig, TrainConfig  # noqa: E402
from codec.weights import load_weights  # noqa: E402

from conftest import EXAMPLE  # noqa: E402

RATE = 16000


def world_config(num_codebooks: int = 2, codebook_size: int = 16) -> ModelConfig:
    return ModelConfig(name="tiny-world", sample_rate=RATE, encoder="world", decoder="world",
                       world=WorldConfig(envelope_dims=20, hop_length=160, n_fft=320),
                       quantizer=QuantizerConfig(kind="vq", codebook_size=codebook_size, num_codebooks=num_codebooks))


@pytest.fixture(scope="module")
def speech():
    """One and a half seconds of real speech (LJSpeech, public domain) at 16 kHz."""
    from codec.audio import load_audio
    return load_audio(EXAMPLE, RATE)[0][RATE // 2:2 * RATE]


def test_band_count_and_fft_size_are_worlds():
    for rate in (8000, 16000, 22050, 24000, 44100, 48000):
        assert aperiodicity_bands(rate) == pyworld.get_num_aperiodicities(rate)
        assert fft_size(rate, 71.0) == pyworld.get_cheaptrick_fft_size(rate, 71.0)


def test_decoding_maps_equal_worlds_decoders():
    config = WorldConfig(envelope_dims=20)
    rate, bins = 24000, 321
    envelope_map, band_map = WorldHead.decoding_maps(config, rate, bins)
    coded = np.random.default_rng(0).normal(size=(5, 20)) * np.r_[3.0, np.full(19, 0.5)]
    size = fft_size(rate, config.f0_min)
    theirs = np.log(pyworld.decode_spectral_envelope(np.ascontiguousarray(coded), rate, size))
    ours = np.c_[coded, np.ones(5)] @ envelope_map.numpy()
    grid = np.linspace(0, 1, size // 2 + 1)
    expected = np.stack([np.interp(np.linspace(0, 1, bins), grid, row) for row in theirs])
    np.testing.assert_allclose(ours, expected, atol=1e-9)
    bands = -np.random.default_rng(1).uniform(1, 40, size=(5, aperiodicity_bands(rate)))
    theirs = 20 * np.log10(pyworld.decode_aperiodicity(np.ascontiguousarray(bands), rate, size))
    expected = np.stack([np.interp(np.linspace(0, 1, bins), grid, row) for row in theirs])
    np.testing.assert_allclose(np.c_[bands, np.ones(5)] @ band_map.numpy(), expected, atol=1e-9)


# Harvest on the audio read faster, and refined by StoneMask, finds the same f0
@pytest.mark.parametrize("time_scale, stonemask", [(1.0, False), (1.5, False), (2.0, False), (2.0, True)])
def test_latents_carry_pitch_and_voicing(time_scale, stonemask):
    config = world_config()
    config.world.pitch_time_scale, config.world.stonemask = time_scale, stonemask
    codec = Codec.from_config(config)
    t = torch.arange(RATE) / RATE
    tone = sum(0.3 / k * torch.sin(2 * torch.pi * 140 * k * t) for k in range(1, 20))
    latents = codec.encoder(tone[None, None])
    assert latents.shape == (1, codec.config.latent_dim, RATE // 160)
    c = codec.config.world
    f0 = torch.exp(latents[0, 0] / c.f0_weight + 0.5 * np.log(c.f0_min * c.f0_max))
    middle = slice(10, -10)
    assert (latents[0, 1, middle] > 0).all()  # voiced
    assert torch.allclose(f0[middle], torch.full_like(f0[middle], 140.0), rtol=0.02)
    noise = codec.encoder(torch.randn(1, 1, RATE, generator=torch.Generator().manual_seed(0)) * 0.1)
    assert (noise[0, 1] < 0).float().mean() > 0.75  # white noise is mostly unvoiced (Harvest calls some voiced)


def test_unquantized_synthesis_resembles_the_original(speech):
    """WORLD's parameters through the head: close in mel distance, far closer than the same energy as noise."""
    codec = Codec.from_config(world_config()).eval()
    x = speech[:len(speech) // 160 * 160]
    decoded = codec.decoder(codec.encoder(x[None, None]))[0, 0]
    pair = align(x.numpy(), RATE, decoded.numpy(), RATE)
    noise = torch.randn_like(x) * x.std()
    assert mel_distance(pair) < 0.5 * mel_distance(align(x.numpy(), RATE, noise.numpy(), RATE))
    assert 0.5 < decoded.square().sum() / x.square().sum() < 2.0


def test_streaming_equals_offline(speech):
    """Blocks of 10 frames with 3 of context: pushes of any size give the offline codes, and chunked decoding
    the offline audio."""
    config = world_config()
    config.world.block_frames, config.world.context_frames = 10, 3
    codec = Codec.from_config(config)
    audio = speech[:12345]  # ends inside a frame and inside a block
    codes = codec.encode(audio)
    assert codes.shape[-1] == -(-len(audio) // 160)
    for sizes in ([160] * 80, [1000, 37, 4000, 9000], [12345]):
        with codec.stream_encoder() as stream:
            pieces, start = [], 0
            for size in sizes:
                pieces.append(stream.push(audio[start:start + size]))
                start += size
            pieces.append(stream.flush())
        assert torch.equal(torch.cat([p for p in pieces if p is not None], -1), codes)
    assert pieces[0].shape[-1] == 10 * ((12345 - 16 * 160) // 1600 + 1)  # whole blocks as soon as they complete
    offline = codec.decode(codes)
    with codec.stream_decoder() as stream:
        chunks = [stream.push(codes[..., i:i + 7]) for i in range(0, codes.shape[-1], 7)]
    torch.testing.assert_close(torch.cat(chunks, -1), offline, atol=1e-5, rtol=0)


def test_block_analysis_is_close_to_whole_signal_analysis(speech):
    """Context of 20 frames: the blocks' parameters match one analysis of the whole clip on nearly every frame."""
    config = world_config()
    codec = Codec.from_config(config)
    x = speech[None, None, :len(speech) // 160 * 160]
    blocks = codec.encoder(x)
    config.world.block_frames = 10_000  # one block
    whole = Codec.from_config(config).encoder(x)
    assert ((blocks[0, 1] > 0) == (whole[0, 1] > 0)).float().mean() > 0.95  # voicing
    assert (blocks[0, 2:] - whole[0, 2:]).abs().median() < 0.05  # envelope and aperiodicity


def test_world_goes_with_world():
    with pytest.raises(ConfigError, match="go together"):
        from_dict(ModelConfig, {"encoder": "world", "decoder": "harmonic"})


def test_fitted_codebooks_use_their_codes_and_improve_by_stage(tmp_path, speech):
    for i, start in enumerate((0, 4000, 8000)):  # three clips of a second
        soundfile.write(tmp_path / f"{i}.wav", speech[start:start + RATE].numpy(), RATE)
    config = TrainConfig(model=world_config(), data=DataConfig(train=str(tmp_path)), out_dir=str(tmp_path / "run"),
                         threads=1)
    codec = load_weights(fit_codebooks(config))
    latents = codec.encoder(speech[None, None])
    errors = [(codec.quantizer.decode(codec.quantizer.encode(latents, n)) - latents).square().mean()
              for n in (1, 2)]
    assert errors[1] < errors[0]
    assert len(codec.encode(speech)[0, 0].unique()) >= 12  # of 16: k-means leaves no code unused


def test_fitting_refuses_simvq(tmp_path):
    model = world_config()
    model.quantizer.kind = "simvq"
    with pytest.raises(ConfigError, match="kind: vq"):
        fit_codebooks(TrainConfig(model=model, data=DataConfig(train=str(tmp_path)), out_dir=str(tmp_path)))


def test_onnx_writes_the_decoder_only(tmp_path):
    pytest.importorskip("onnx")
    from codec.onnx import export_onnx
    codec = Codec.from_config(world_config()).eval()
    paths = export_onnx(codec, tmp_path)
    assert sorted(p.name for p in paths) == ["decoder.onnx", "decoder_streaming.onnx"]


def test_clips_of_different_lengths_encode_as_alone(speech):
    codec = Codec.from_config(world_config())
    clips = [speech[:8000], speech[:13000]]
    together = codec.encode(clips)
    for clip, codes in zip(clips, together):
        assert torch.equal(codes, codec.encode(clip)[0])


def test_file_round_trip_with_the_shipped_world_model(tmp_path):
    from codec.files import decode_file, encode_file
    from codec.weights import load
    codec = load("world")
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    source = tmp_path / "clip.wav"
    soundfile.write(source, audio[:rate], rate)
    codes_file = encode_file(codec, source, tmp_path / "clip.codes")
    assert codes_file.codes.shape == (8, 75) and codes_file.model_name == codec.name
    decode_file(codec, tmp_path / "clip.codes", tmp_path / "decoded.wav")
    out, out_rate = soundfile.read(tmp_path / "decoded.wav", dtype="float32")
    assert out_rate == codec.sample_rate and len(out) == codec.sample_rate  # decoded at the model's rate
    assert np.isfinite(out).all() and 0.5 < out.std() / audio[:rate].std() < 2.0
    # block by block through a stream decoder, whose refiner holds 3 frames until the flush: as one call, at 1.5
    # kbps (where the refiner acts) to the 16-bit file's rounding
    encode_file(codec, source, tmp_path / "low.codes", num_codebooks=2)
    low = decode_file(codec, tmp_path / "low.codes", tmp_path / "low.wav")
    out, _ = soundfile.read(tmp_path / "low.wav", dtype="float32")
    offline = codec.decode(low.codes[None].long(), length=low.num_samples)[0].clamp(-1, 1).numpy()
    assert np.abs(out - offline).max() < 1e-4


def test_the_shipped_model_streams_exactly_over_seconds():
    """A stream's audio equals one call's over the whole 5.1 s example: the oscillator integrates f0, so the
    prediction's float32 rounding (the doubling of one call against a stream's) once put them 2e-3 apart by 1.4 s."""
    from codec.weights import load
    codec = load("bundled")
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    codes = codec.encode(torch.from_numpy(audio), rate)
    offline = codec.decode(codes)
    for size in (1, 75):
        stream = codec.stream_decoder()
        chunks = [stream.push(codes[..., i:i + size]) for i in range(0, codes.shape[-1], size)] + [stream.flush()]
        torch.testing.assert_close(torch.cat([c for c in chunks if c is not None], -1), offline, atol=1e-5, rtol=0)


def test_the_shipped_models_searched_codes_stream_as_offline():
    """At 1.5 kbps the shipped model's encoder searches 32 paths per 150-frame block; a stream pushed in pieces
    that are no blocks, and flushed inside the second block, finds the same codes as one call. Its refiner
    (a network at 2 codebooks) decodes them in a stream as one call does."""
    from codec.weights import load
    codec = load("bundled")
    assert codec.quantizer.search_beams[1] > 1
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    audio = torch.from_numpy(audio[:int(2.5 * rate)])
    codes = codec.encode(audio, rate, num_codebooks=2)
    with codec.stream_encoder(num_codebooks=2, sample_rate=rate) as stream:
        pieces = [stream.push(audio[i:i + 9000]) for i in range(0, len(audio), 9000)] + [stream.flush()]
    assert torch.equal(torch.cat([p for p in pieces if p is not None], -1), codes)
    assert 2 in codec.refiner.codebooks
    stream = codec.stream_decoder()
    pieces = [stream.push(codes[..., i:i + 5]) for i in range(0, codes.shape[-1], 5)] + [stream.flush()]
    decoded = torch.cat([p for p in pieces if p is not None], -1)
    torch.testing.assert_close(decoded, codec.decode(codes), atol=1e-5, rtol=0)


def test_the_recipe_builds_the_shipped_model():
    from pathlib import Path

    from codec.config import load_yaml
    from codec.weights import load
    recipe = load_yaml(TrainConfig, Path(__file__).parents[1] / "recipes" / "bundled" / "config.yaml")
    assert recipe.model == load("bundled").config == load("world").config


def test_decoding_with_the_wrong_model_names_the_shipped_one(tmp_path, capsys):
    from codec.cli import main
    source = tmp_path / "clip.wav"
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    soundfile.write(source, audio[:rate // 2], rate)
    assert main(["encode", "--model", "low-latency", str(source), str(tmp_path / "clip.codes")]) == 0
    assert main(["decode", str(tmp_path / "clip.codes"), str(tmp_path / "out.wav")]) == 1  # the bundled model
    assert "pass --model low-latency" in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()
