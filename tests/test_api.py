import pytest
import torch

import codec
from codec.config import ModelConfig, load_yaml
from codec.errors import ConfigError, ModelError
from codec.weights import load_weights, save_weights, tokenizer_sha256


def test_bundled_model_properties():
    model = codec.load("bundled")
    assert model.sample_rate == 24000 and model.frame_rate == 75
    assert model.num_codebooks == 8 and model.codebook_size == 1024
    assert model.bitrate == 6000
    assert model.codebooks_for_bandwidth(3) == 4 and model.codebooks_for_bandwidth(1.5) == 2


def test_encode_resamples_and_batches(tiny_weights):
    model = codec.load(tiny_weights)
    audio = torch.randn(2, 16000) * 0.1
    codes = model.encode(audio, sample_rate=16000)
    assert codes.shape == (2, 3, 1000) and codes.dtype == torch.int64
    assert model.decode(codes).shape == (2, 8000)
    assert torch.equal(model.encode(audio[0], 16000), codes[:1])


def test_weights_round_trip_and_checksum(tmp_path, tiny_weights):
    model = load_weights(tiny_weights, for_training=True)
    save_weights(model, tmp_path / "copy.safetensors", dtype=torch.float16)
    copy = codec.load(tmp_path / "copy.safetensors")
    assert copy.weights_sha256 != codec.load(tiny_weights).weights_sha256
    assert copy.config == model.config


def test_tokenizer_hash_covers_encoder_and_quantizer_values_only():
    state = {"encoder.w": torch.tensor([0.5, -0.0]), "quantizer.b": torch.tensor([1.0]), "decoder.w": torch.ones(2)}
    same = tokenizer_sha256(state)
    assert tokenizer_sha256({**state, "decoder.w": torch.zeros(2)}) == same
    assert tokenizer_sha256({**state, "encoder.w": torch.tensor([0.5, 0.0])}) == same  # what an EMA does to -0.0
    assert tokenizer_sha256({**state, "encoder.w": torch.tensor([0.5, 1e-8])}) != same
    assert tokenizer_sha256({**state, "quantizer.b": torch.tensor([1.0], dtype=torch.float16)}) == same  # as loaded
    assert tokenizer_sha256({**state, "quantizer.b": torch.tensor([1.0001])}) != same


def test_bad_weights_files(tmp_path):
    with pytest.raises(ModelError, match="no such"):
        codec.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk" * 100)
    with pytest.raises(ModelError):
        codec.load(tmp_path / "junk.safetensors")


def test_unknown_config_key_names_key_and_file(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("name: x\nseanet: {n_filterz: 3}\n")
    with pytest.raises(ConfigError, match=r"model.yaml.seanet: unknown key 'n_filterz'"):
        load_yaml(ModelConfig, path)
    path.write_text("quantizer: {kind: lfq}\n")
    with pytest.raises(ConfigError, match="not one of"):
        load_yaml(ModelConfig, path)
    path.write_text("quantizer: {codebook_size: 64}\n")
    assert load_yaml(ModelConfig, path, ["quantizer.num_codebooks=2"]).quantizer.num_codebooks == 2
    path.write_text("quantizer: {beta: 1e-1, codebook_size: 1e3}\n")  # YAML reads these as strings
    assert (load_yaml(ModelConfig, path).quantizer.beta, load_yaml(ModelConfig, path).quantizer.codebook_size) == \
        (0.1, 1000)
    with pytest.raises(ConfigError, match=r"override.quantizer.num_codebooks: 0 is out of range"):
        load_yaml(ModelConfig, path, ["quantizer.num_codebooks=0"])


def test_untrained_encoder_latents_follow_the_input_not_the_biases():
    """At initialisation the latents must vary from frame to frame more than they share a common offset;
    otherwise every frame looks alike and the first codebook fit uses a handful of codes."""
    import soundfile
    from pathlib import Path
    from codec.nn import ENCODERS
    torch.manual_seed(0)
    audio, _ = soundfile.read(Path(__file__).parents[1] / "examples" / "LJ001-0004.wav", dtype="float32")
    latents = ENCODERS["seanet"](ModelConfig())(torch.from_numpy(audio)[None, None, :24000])[0]
    spread = latents.var(dim=1).sum()            # variance across frames, summed over channels
    offset = latents.mean(dim=1).square().sum()  # squared norm of the mean frame
    assert spread > offset


def test_override_into_a_value_is_a_config_error(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match="not a section"):
        load_yaml(ModelConfig, path, ["name.sub=1"])


def test_bundled_model_is_intelligible_and_every_codebook_counts():
    """On the shipped speech clip the bundled model keeps the speech intelligible, and more codebooks bring it
    closer: the earlier bundled model scored the same at 1.5 and 6 kbps, its later codebooks carrying nothing."""
    import soundfile
    from codec.metrics.quality import align, mel_distance, stoi
    from conftest import EXAMPLE
    model = codec.load("bundled")
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    scores = {}
    for kbps in (1.5, 6):
        codes = model.encode(torch.from_numpy(audio), rate, num_codebooks=model.codebooks_for_bandwidth(kbps))
        pair = align(audio, rate, model.decode(codes)[0].numpy(), model.sample_rate)
        scores[kbps] = stoi(pair), mel_distance(pair)
    assert scores[6][0] > 0.75, scores
    assert scores[6][0] > scores[1.5][0] and scores[6][1] < scores[1.5][1], scores


def test_an_open_stream_leaves_offline_calls_and_other_streams_alone(tiny_weights):
    """A stream owns its state (issue 20): while one is open, offline calls and a second stream on the same
    model give what they give alone, and the first stream goes on where it stopped. (Before, the state lived in
    the layers and both were refused.)"""
    model = codec.load(tiny_weights)
    audio = torch.randn(1, 800) * 0.1
    codes = model.encode(audio)
    offline = model.decode(codes)
    decoder = model.stream_decoder()
    first = decoder.push(codes[..., :5])
    assert torch.equal(model.decode(codes), offline)
    with model.stream_decoder() as second:
        assert (second.push(codes) - offline).abs().max() < 1e-5
    rest = decoder.push(codes[..., 5:])
    decoder.close()
    assert (torch.cat([first, rest], -1) - offline).abs().max() < 1e-5
    with model.stream_encoder() as encoder:
        head = encoder.push(audio[0, :100])  # a 1-D chunk
        assert torch.equal(model.encode(audio), codes)
        tail = encoder.push(audio[0, 100:])
    assert torch.equal(torch.cat([head, tail], -1), codes)


def test_encode_refuses_what_it_cannot_encode(tiny_weights):
    model = codec.load(tiny_weights)
    for audio, message in ((torch.zeros(0), "empty"), (torch.full((100,), float("nan")), "NaN"),
                           (torch.randn(4000, 2), "samples, channels"), (torch.zeros(2, 2, 100), "mono")):
        with pytest.raises(ValueError, match=message):
            model.encode(audio)
    assert model.decode(torch.zeros(1, 3, 0, dtype=torch.long)).shape == (1, 0)


def test_bandwidth_choices_and_refusals():
    model = codec.load("bundled")
    assert [model.codebooks_for_bandwidth(0.75 * n) for n in range(1, 9)] == list(range(1, 9))  # 0.75 kbps steps
    assert model.codebooks_for_bandwidth(5) == 6  # the most that fit
    for kbps, message in ((float("nan"), "positive"), (float("inf"), "positive"), (0, "positive"),
                          (-3, "positive"), (0.5, "below this model's lowest, 0.75"),
                          (6.5, "above this model's highest, 6 kbps"), (6000, "above")):
        with pytest.raises(ValueError, match=message):
            model.codebooks_for_bandwidth(kbps)


def test_an_ended_stream_refuses_more(tiny_weights):
    """After flush or close the layers have dropped their state: a push would encode as if from silence."""
    model = codec.load(tiny_weights)
    audio = torch.randn(1, 100) * 0.1
    offline, codes = model.encode(audio[:, :96]), model.encode(audio)
    encoder = model.stream_encoder()
    encoder.push(audio)
    encoder.flush()
    for call in (lambda: encoder.push(audio), encoder.flush):
        with pytest.raises(RuntimeError, match="has ended"):
            call()
    with model.stream_encoder() as second:
        first_half = second.push(audio[:, :50])
        encoder.close()  # again: it must not end the newer stream's state
        assert torch.equal(torch.cat([first_half, second.push(audio[:, 50:])], -1), offline)
    with model.stream_decoder() as decoder:
        decoder.push(codes[..., :2])
    with pytest.raises(RuntimeError, match="stream decoder has ended"):
        decoder.push(codes[..., 2:])


def test_codes_out_of_range_are_a_clear_error(tiny_weights):
    from codec.errors import CodesError
    model = codec.load(tiny_weights)
    codes = model.encode(torch.randn(1, 800) * 0.1)
    dropped = codes.clone()
    dropped[:, 2] = -1  # a dropped stage decodes as if absent
    assert torch.allclose(model.decode(dropped), model.decode(codes[:, :2]), atol=1e-6)
    for bad in (16, -2):
        wrong = codes.clone()
        wrong[0, 1, 7] = bad
        with pytest.raises(CodesError, match=f"code {bad} at codebook 1, frame 7 is out of range: ids .* 0 to 15"):
            model.decode(wrong)
        with model.stream_decoder() as decoder, pytest.raises(CodesError):
            decoder.push(wrong)


def test_a_codec_is_composed_from_the_parts_its_config_names():
    """Codec.from_config takes each part from its family's table, and a Codec composed by hand from the same parts
    encodes and decodes the same way."""
    from codec.model import Codec
    from codec.nn import DECODERS, ENCODERS, ISTFTDecoder, SEANetDecoder, SEANetEncoder
    from codec.quantize import QUANTIZERS, SimVQ, VectorQuantizer, build_quantizer
    from conftest import tiny_config
    assert set(DECODERS) == {"seanet", "istft", "harmonic", "world"} and set(QUANTIZERS) == {"simvq", "vq"}
    assert set(ENCODERS) == {"seanet", "world"}
    built = Codec.from_config(tiny_config(kind="vq", decoder="istft"))
    assert isinstance(built.encoder, SEANetEncoder) and isinstance(built.decoder, ISTFTDecoder)
    assert all(isinstance(stage, VectorQuantizer) for stage in built.quantizer.stages)
    config = tiny_config(decoder="seanet")
    torch.manual_seed(0)
    composed = Codec(ENCODERS["seanet"](config), build_quantizer(config.seanet.dimension, config.quantizer),
                     DECODERS["seanet"](config), config).eval()
    torch.manual_seed(0)
    configured = Codec.from_config(config).eval()
    assert isinstance(configured.decoder, SEANetDecoder)
    assert all(isinstance(stage, SimVQ) for stage in configured.quantizer.stages)
    audio = torch.randn(1, 1, 800) * 0.1
    codes = composed.encode(audio)
    assert torch.equal(codes, configured.encode(audio))
    assert torch.allclose(composed.decode(codes), configured.decode(codes))
