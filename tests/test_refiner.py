"""The latent refiner: a causal network per number of codebooks that adds back what quantization lost."""
import numpy as np
import pytest
import soundfile
import torch

pytest.importorskip("pyworld")

from codec.config import ModelConfig, from_dict, to_dict  # noqa: E402
from codec.errors import ConfigError  # noqa: E402
from codec.model import Codec  # noqa: E402
from codec.train.codebooks import fit_codebooks  # noqa: E402
from codec.train.config import DataConfig, TrainConfig  # noqa: E402
from codec.weights import load_weights, save_weights  # noqa: E402

from test_world import RATE, speech, world_config  # noqa: E402, F401


def refined_config(codebooks=(1,), context_frames: int = 2, lookahead_frames: int = 0) -> ModelConfig:
    config = world_config()
    config.refiner.codebooks, config.refiner.context_frames, config.refiner.hidden_dim = list(codebooks), \
        context_frames, 32
    config.refiner.lookahead_frames = lookahead_frames
    return config


def randomised(codec: Codec) -> Codec:
    """A refiner whose networks correct something (a fresh one adds zeros), and statistics that matter."""
    torch.manual_seed(0)
    with torch.no_grad():
        for network in codec.refiner.networks:
            for parameter in network.parameters():
                parameter.normal_(0, 0.02)
        codec.refiner.shift.normal_()
        codec.refiner.scale.uniform_(0.5, 2.0)
    return codec


@pytest.fixture(scope="module")
def clips(tmp_path_factory, speech):  # noqa: F811
    folder = tmp_path_factory.mktemp("clips")
    for i, start in enumerate((0, 4000, 8000)):
        soundfile.write(folder / f"{i}.wav", speech[start:start + RATE].numpy(), RATE)
    return folder


def test_fitting_lowers_the_error_at_its_number_of_codebooks_only(tmp_path, clips, speech):  # noqa: F811
    config = TrainConfig(model=refined_config(), data=DataConfig(train=str(clips)), out_dir=str(tmp_path), threads=1)
    codec = load_weights(fit_codebooks(config))
    latents = codec.encoder(speech[None, None])
    for n in (1, 2):
        codes = codec.quantizer.encode(latents, n)
        decoded = codec.quantizer.decode(codes)
        refined = codec.latents_from_codes(codes)
        if n == 1:
            assert (refined - latents).square().mean() < 0.9 * (decoded - latents).square().mean()
        else:  # no network at 2 codebooks
            assert torch.equal(refined, decoded)


def test_a_refiner_fits_to_frozen_codebooks(tmp_path, clips):
    """From a model without a refiner, `freeze: [quantizer]` keeps its codebooks, so its codes stay valid."""
    plain = TrainConfig(model=world_config(), data=DataConfig(train=str(clips)), out_dir=str(tmp_path / "a"),
                        threads=1)
    before = load_weights(fit_codebooks(plain))
    refined = TrainConfig(model=refined_config(), data=DataConfig(train=str(clips)), out_dir=str(tmp_path / "b"),
                          threads=1, freeze=["quantizer"])
    after = load_weights(fit_codebooks(refined, str(tmp_path / "a" / "weights.safetensors")))
    assert after.tokenizer_sha256 == before.tokenizer_sha256
    assert any(p.abs().sum() > 0 for p in after.refiner.networks[0][-1].parameters())  # fitted, not fresh
    refined.out_dir = str(tmp_path / "c")
    with pytest.raises(ConfigError, match="--init-weights"):
        fit_codebooks(refined)


def test_a_fresh_refiner_changes_nothing(speech):  # noqa: F811
    codec = Codec.from_config(refined_config())
    codes = codec.encode(speech[:4000], num_codebooks=1)
    assert torch.equal(codec.latents_from_codes(codes), codec.quantizer.decode(codes))


@pytest.mark.parametrize("lookahead", [0, 3])
def test_streams_decode_as_offline_with_a_refiner(speech, lookahead):  # noqa: F811
    codec = randomised(Codec.from_config(refined_config((1, 2), context_frames=3, lookahead_frames=lookahead)))
    assert codec.decoder_lookahead == lookahead
    hop = codec.hop_length
    for n in (1, 2):
        codes = codec.encode(speech[:12345], num_codebooks=n)
        offline = codec.decode(codes)
        assert not torch.equal(codec.latents_from_codes(codes), codec.quantizer.decode(codes))
        bounds = [0, 1, 3, 7, 8, 10, 14, 30, 31, codes.shape[-1]]  # pieces shorter and longer than the context
        stream = codec.stream_decoder()
        chunks = [stream.push(codes[..., start:end]) for start, end in zip(bounds, bounds[1:])]
        # each push returns the frames `lookahead` behind the last one in
        assert [c.shape[-1] for c in chunks] == [hop * (max(0, end - lookahead) - max(0, start - lookahead))
                                                 for start, end in zip(bounds, bounds[1:])]
        chunks.append(stream.flush())  # and the flush the rest
        assert stream.closed and (chunks[-1] is None) == (lookahead == 0)
        torch.testing.assert_close(torch.cat([c for c in chunks if c is not None], -1), offline, atol=1e-5, rtol=0)
        with codec.stream_decoder() as short:  # a stream shorter than the look-ahead comes out whole at the flush
            head = [short.push(codes[..., :2]), short.flush()]
        torch.testing.assert_close(torch.cat([c for c in head if c is not None], -1), codec.decode(codes[..., :2]),
                                   atol=1e-5, rtol=0)


def test_dropped_stages_choose_the_network(speech):  # noqa: F811
    """Codes of 2 stages whose second is dropped (-1, as ONNX graphs take fewer codebooks) refine as 1 codebook."""
    codec = randomised(Codec.from_config(refined_config((1, 2))))
    codes = codec.encode(speech[:8000], num_codebooks=1)
    dropped = torch.cat([codes, torch.full_like(codes, -1)], 1)
    torch.testing.assert_close(codec.latents_from_codes(dropped), codec.latents_from_codes(codes))


def test_the_refiner_is_no_part_of_the_tokenizer(tmp_path):
    codec = Codec.from_config(refined_config())
    save_weights(codec, tmp_path / "a.safetensors")
    save_weights(randomised(codec), tmp_path / "b.safetensors")
    a, b = load_weights(tmp_path / "a.safetensors"), load_weights(tmp_path / "b.safetensors")
    assert a.tokenizer_sha256 == b.tokenizer_sha256 and a.weights_sha256 != b.weights_sha256
    assert b.config.refiner == codec.config.refiner
    torch.testing.assert_close(b.refiner.shift, codec.refiner.shift)


@pytest.mark.parametrize("lookahead", [0, 2])
def test_onnx_decoders_carry_the_refiner(tmp_path, speech, lookahead):  # noqa: F811
    """A causal refiner runs in decoder_streaming.onnx; one that reads ahead in two graphs, which the host's stream
    decoder joins as a PyTorch stream does (dropping the first frames, flushing the last)."""
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")  # noqa: F841
    from codec.onnx import export_onnx
    from codec.onnx_runtime import OnnxCodec
    codec = randomised(Codec.from_config(refined_config((1,), lookahead_frames=lookahead))).eval()
    save_weights(codec, tmp_path / "refined.safetensors")
    codec = load_weights(tmp_path / "refined.safetensors")
    export_onnx(codec, tmp_path / "onnx")
    runtime = OnnxCodec(tmp_path / "onnx")
    assert runtime.decoder_lookahead == lookahead
    assert sorted(p.stem for p in (tmp_path / "onnx").iterdir()) == (  # WORLD's analysis: no encoder graph
        ["decoder", "decoder_streaming"] if not lookahead else ["decoder", "latents_streaming", "synthesis_streaming"])
    codes = codec.encode(speech[:6000], num_codebooks=1)
    expected = codec.decode(codes).numpy()
    dropped = torch.cat([codes, torch.full_like(codes, -1)], 1).numpy()
    assert np.abs(runtime.decode(dropped) - expected).max() < 1e-4
    stream, pieces = runtime.stream_decoder(), []
    for start in range(0, dropped.shape[-1], 4):
        piece = stream.push(dropped[..., start:start + 4])
        frames = min(start + 4, dropped.shape[-1]) - start - lookahead * (start == 0)  # the first push: 4 - lookahead
        assert piece.shape[-1] == codec.hop_length * frames
        pieces.append(piece)
    last = stream.flush()
    assert (last is None) == (lookahead == 0)
    assert np.abs(np.concatenate(pieces + [last] * (last is not None), -1) - expected).max() < 1e-4


@pytest.mark.parametrize("refiner, message", [({"codebooks": [3]}, "distinct numbers"),
                                              ({"codebooks": [1, 1]}, "distinct numbers")])
def test_config_refusals(refiner, message):
    data = to_dict(world_config())
    data["refiner"] = refiner
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, data)
    with pytest.raises(ConfigError, match="goes with encoder: world"):
        from_dict(ModelConfig, {"refiner": {"codebooks": [1]}})
