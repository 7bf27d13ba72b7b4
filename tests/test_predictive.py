"""Closed-loop prediction around the residual quantizer: fitted, streamed, exported."""
import numpy as np
import pytest
import torch

from codec.config import ModelConfig, QuantizerConfig, from_dict
from codec.errors import ConfigError
from codec.nn.streaming import streaming
from codec.quantize import PredictiveQuantizer, build_quantizer
from codec.train.codebooks import fit_prediction, fit_stages, prediction_errors

DIM = 4


def slow_latents(batch: int, frames: int, seed: int) -> torch.Tensor:
    """(B, DIM, F): each dimension a first-order autoregression (0.95) around 2, moving slowly as WORLD's do."""
    noise = torch.randn(batch, DIM, frames, generator=torch.Generator().manual_seed(seed))
    x = torch.zeros_like(noise)
    x[..., 0] = noise[..., 0] * 3
    for t in range(1, frames):
        x[..., t] = 0.95 * x[..., t - 1] + noise[..., t]
    return x + 2.0


def quantizer(prediction: bool) -> PredictiveQuantizer:
    return build_quantizer(DIM, QuantizerConfig(kind="vq", codebook_size=16, num_codebooks=2, prediction=prediction))


def fitted(prediction: bool, latents: torch.Tensor):
    """A quantizer fitted as `codec train` fits the world model's: files are (F, D)."""
    q, files, generator = quantizer(prediction), list(latents.transpose(1, 2)), torch.Generator().manual_seed(0)
    if prediction:
        fit_prediction(files, q)
        fit_stages(prediction_errors(files, q, closed=False), q.stages, generator)
        fit_stages(prediction_errors(files, q, closed=True), q.stages, generator)
    else:
        fit_stages(torch.cat(files), q.stages, generator)
    return q


def random_quantizer() -> PredictiveQuantizer:
    q = quantizer(True)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for stage in q.stages:
            stage.codebook.copy_(torch.randn(16, DIM, generator=generator))
            stage.initialized.fill_(True)
        q.decay.copy_(torch.tensor([0.0, 0.5, 0.9, 0.98]))
        q.mean.copy_(torch.randn(DIM, generator=generator))
    return q


def test_fitting_finds_the_decay_and_prediction_lowers_the_error():
    train, test = slow_latents(16, 300, seed=0), slow_latents(4, 300, seed=1)
    plain, predictive = fitted(False, train), fitted(True, train)
    torch.testing.assert_close(predictive.decay, torch.full((DIM,), 0.95), atol=0.03, rtol=0)
    errors = [(q.decode(q.encode(test)) - test).square().mean() for q in (plain, predictive)]
    assert errors[1] < 0.5 * errors[0]  # a tenth of the variance to code: the same codes go much further


def test_decoding_retraces_the_encoders_reconstruction():
    """The decoder's doubling sum equals the encoder's frame-by-frame loop, over many doubling steps."""
    q, x = random_quantizer(), slow_latents(2, 1000, seed=2)
    output = q(x)
    torch.testing.assert_close(q.decode(output.codes), output.quantized, atol=1e-4, rtol=1e-5)
    assert (output.quantized - x).abs().max() < x.abs().max()


def nearest_codes(q: PredictiveQuantizer, x: torch.Tensor, n: int) -> torch.Tensor:
    """The search at one path, written out: each frame's prediction from the last quantized frame, then each
    stage's nearest code to what the stages before it left."""
    previous, codes = q.mean.expand(len(x), -1), []
    for frame in x.unbind(-1):
        residual, ids = frame - q.predict(previous), []
        for stage in q.stages[:n]:
            table = stage.vectors(torch.arange(stage.codebook_size)).detach()
            ids.append(torch.cdist(residual, table).argmin(1))
            residual = residual - table[ids[-1]]
        previous, codes = frame - residual, codes + [torch.stack(ids, 1)]
    return torch.stack(codes, -1)


def test_one_path_takes_the_nearest_code_of_each_stage():
    q, x = random_quantizer(), slow_latents(2, 40, seed=4)
    q.search_beams = (1, 8)  # one path at one codebook, eight at two
    assert torch.equal(q.encode(x, 1), nearest_codes(q, x, 1))
    assert not torch.equal(q.encode(x, 2), nearest_codes(q, x, 2))


def test_a_wider_search_finds_nearer_codes_that_decode_as_encoded():
    q, x = random_quantizer(), slow_latents(4, 120, seed=5)
    errors = []
    for width in (1, 4, 16):
        q.search_beams = (width,)
        output = q(x)
        torch.testing.assert_close(q.decode(output.codes), output.quantized, atol=1e-4, rtol=1e-5)
        errors.append((output.quantized - x).square().sum().item())
    assert errors[2] < errors[1] < 0.97 * errors[0]


def test_search_weights_trade_one_dimensions_error_for_the_others():
    q, x = random_quantizer(), slow_latents(4, 120, seed=6)
    q.search_beams = (16,)
    plain = (q(x).quantized - x).square().mean((0, 2))
    q.search_weights = torch.tensor([1.0, 1.0, 1.0, 20.0])
    weighted = (q(x).quantized - x).square().mean((0, 2))
    assert weighted[3] < 0.9 * plain[3] and weighted[:3].sum() > plain[:3].sum()
    q.search_beams = (1,)  # one path: the nearest code by the fitted distance, whatever the weights
    assert torch.equal(q.encode(x, 1), nearest_codes(q, x, 1))


@pytest.mark.parametrize("width,frames,push", [(1, 150, 7), (6, 5, 10)])
def test_streams_equal_offline(width, frames, push):
    """Any pushes with one path; pushes of whole search segments (as the world encoder's blocks are) with more."""
    q, x = random_quantizer(), slow_latents(2, 50, seed=3)
    q.search_beams, q.search_frames = (width,), frames
    codes, latents = q.encode(x), q.decode(q.encode(x))
    with streaming(q, 2):
        pieces = [q.encode(x[..., i:i + push]) for i in range(0, 50, push)]
    assert torch.equal(torch.cat(pieces, -1), codes)
    with streaming(q, 2):
        pieces = [q.decode(codes[..., i:i + 4]) for i in range(0, 50, 4)] + [q.decode(codes[..., :0])]
    torch.testing.assert_close(torch.cat(pieces, -1), latents, atol=1e-5, rtol=0)


def test_prediction_goes_with_fitted_codebooks():
    with pytest.raises(ConfigError, match="prediction"):
        from_dict(ModelConfig, {"quantizer": {"prediction": True}})


def test_search_segments_divide_the_encoders_blocks():
    world = {"encoder": "world", "decoder": "world", "quantizer": {"kind": "vq", "prediction": True}}
    world["world"] = {"block_frames": 150}
    world["quantizer"]["search_frames"] = 75
    from_dict(ModelConfig, world)
    world["quantizer"]["search_frames"] = 100
    with pytest.raises(ConfigError, match="search_frames 100 must divide world.block_frames 150"):
        from_dict(ModelConfig, world)
    world["quantizer"]["search_frames"] = 75
    world["quantizer"]["search_weights"] = [1.0] * 3
    with pytest.raises(ConfigError, match="search_weights holds 3 weights, one per latent dimension"):
        from_dict(ModelConfig, world)


def test_codecs_stream_and_export_with_prediction(tmp_path):
    """A world codec with prediction: streams equal offline, and its ONNX decoder carries the prediction."""
    pytest.importorskip("pyworld")
    from conftest import EXAMPLE
    from test_world import RATE, world_config

    from codec.audio import load_audio
    from codec.model import Codec
    config = world_config()
    config.quantizer.prediction = True
    config.world.block_frames, config.world.context_frames = 10, 3
    config.quantizer.search_beams, config.quantizer.search_frames = [4], 10  # the flush's last block: partial
    codec = Codec.from_config(config).eval()
    with torch.no_grad():
        codec.quantizer.decay.fill_(0.9)
        codec.quantizer.mean.copy_(codec.encoder(load_audio(EXAMPLE, RATE)[0][None, None, :RATE]).mean((0, 2)))
    audio = load_audio(EXAMPLE, RATE)[0][RATE // 2:RATE // 2 + 5900]  # 37 frames: 7 of the last block
    codes = codec.encode(audio)
    with codec.stream_encoder() as stream:
        pieces = [stream.push(audio[i:i + 1700]) for i in range(0, len(audio), 1700)] + [stream.flush()]
    assert torch.equal(torch.cat([p for p in pieces if p is not None], -1), codes)
    offline = codec.decode(codes)
    with codec.stream_decoder() as stream:
        chunks = [stream.push(codes[..., i:i + 5]) for i in range(0, codes.shape[-1], 5)]
    torch.testing.assert_close(torch.cat(chunks, -1), offline, atol=1e-5, rtol=0)

    pytest.importorskip("onnxruntime")
    from codec.onnx import export_onnx
    from codec.onnx_runtime import OnnxCodec
    export_onnx(codec, tmp_path)
    runtime = OnnxCodec(tmp_path)
    numpy_codes = codes.numpy()
    assert np.abs(runtime.decode(numpy_codes) - offline.numpy()).max() < 1e-4
    state, pieces = runtime.stream_state("decoder_streaming", 1), []
    for start in range(0, codes.shape[-1], 4):  # the last quantized frame goes through the state
        piece, state = runtime.step("decoder_streaming", numpy_codes[..., start:start + 4], state)
        pieces.append(piece)
    assert np.abs(np.concatenate(pieces, -1) - offline.numpy()).max() < 1e-4


def test_codec_train_fits_the_prediction(tmp_path):
    """`codec train` on a world config with prediction: the decays come from the audio, and the stages code
    what the prediction leaves better and better."""
    pytest.importorskip("pyworld")
    import soundfile
    from conftest import EXAMPLE
    from test_world import RATE, world_config

    from codec.audio import load_audio
    from codec.train.codebooks import fit_codebooks
    from codec.train.config import DataConfig, TrainConfig
    from codec.weights import load_weights
    speech = load_audio(EXAMPLE, RATE)[0]
    for i, start in enumerate((0, 8000, 16000)):
        soundfile.write(tmp_path / f"{i}.wav", speech[start:start + RATE].numpy(), RATE)
    model = world_config()
    model.quantizer.prediction = True
    config = TrainConfig(model=model, data=DataConfig(train=str(tmp_path)), out_dir=str(tmp_path / "run"), threads=1)
    codec = load_weights(fit_codebooks(config))
    assert 0.5 < codec.quantizer.decay[0] <= 0.98  # f0 moves slowly
    latents = codec.encoder(speech[None, None, RATE:2 * RATE])
    errors = [(codec.quantizer.decode(codec.quantizer.encode(latents, n)) - latents).square().mean() for n in (1, 2)]
    assert errors[1] < errors[0]
