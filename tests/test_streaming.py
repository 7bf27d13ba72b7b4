import pytest
import torch
from torch import nn

from codec.model import Codec
from codec.nn import StreamingConv1d, StreamingConvTranspose1d, streaming

from conftest import tiny_config


def stream(module, x, chunk):
    with streaming(module, x.shape[0]):
        return torch.cat([module(x[..., s:s + chunk]) for s in range(0, x.shape[-1], chunk)], -1)


@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (3, 1, 4), (4, 2, 1), (16, 8, 1)])
@pytest.mark.parametrize("chunk", [1, 3, 8, 50])
def test_conv_stream_equals_offline(kernel, stride, dilation, chunk):
    torch.manual_seed(0)
    conv = StreamingConv1d(3, 5, kernel, stride=stride, dilation=dilation)
    x = torch.randn(2, 3, 96)
    offline = conv(x)
    assert offline.shape[-1] == 96 // stride
    assert torch.allclose(stream(conv, x, chunk), offline, atol=1e-6)


def test_conv_is_causal():
    torch.manual_seed(0)
    conv = StreamingConv1d(1, 1, 7, stride=2)
    x = torch.randn(1, 1, 40)
    y = x.clone()
    y[..., 20:] += 1
    assert torch.allclose(conv(x)[..., :10], conv(y)[..., :10])


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_transposed_conv_stream_equals_offline(chunk):
    torch.manual_seed(0)
    conv = StreamingConvTranspose1d(4, 3, 8, stride=4)
    x = torch.randn(2, 4, 13)
    offline = conv(x)
    assert offline.shape[-1] == 13 * 4
    assert torch.allclose(stream(conv, x, chunk), offline, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 8, 9, 40])
def test_lstm_stream_equals_offline_whether_stepped_by_hand_or_not(chunk):
    """Short chunks without gradients step the LSTM's equations by hand (faster on a CPU); longer ones run
    nn.LSTM: both continue the same state and equal the offline pass."""
    from codec.nn.seanet import HAND_STEPPED_FRAMES, StreamingLSTM
    torch.manual_seed(0)
    lstm = StreamingLSTM(6, 2).eval()
    x = torch.randn(2, 6, 40)
    with torch.no_grad():
        assert lstm._step_by_hand(x[..., :chunk].permute(2, 0, 1)) == (chunk <= HAND_STEPPED_FRAMES)
        assert torch.allclose(stream(lstm, x, chunk), lstm(x), atol=1e-6)


@pytest.fixture(params=[("seanet", "absolute"), ("istft", "absolute"), ("istft", "integrated")],
                ids=["seanet", "istft", "istft-integrated-phase"])
def codec(request):
    torch.manual_seed(0)
    decoder, phase = request.param
    config = tiny_config(decoder=decoder)
    config.istft.phase = phase
    return Codec.from_config(config).eval()


@pytest.mark.parametrize("chunk", [1, 3, 7, 8, 9, 100, 1001])
def test_codec_stream_encode_equals_offline(codec, chunk):
    audio = torch.randn(2, 1, 803) * 0.3  # not a whole number of frames (hop 8)
    offline = codec.encode(audio)
    encoder = codec.stream_encoder()
    parts = [encoder.push(audio[..., s:s + chunk]) for s in range(0, audio.shape[-1], chunk)]
    tail = encoder.flush()
    streamed = torch.cat(parts + ([tail] if tail is not None else []), -1)
    assert offline.shape == (2, 3, 101)
    assert torch.equal(streamed, offline)


@pytest.mark.parametrize("chunk", [1, 2, 7, 50])
def test_codec_stream_decode_equals_offline(codec, chunk):
    codes = codec.encode(torch.randn(1, 1, 800) * 0.3)
    offline = codec.decode(codes)
    decoder = codec.stream_decoder()
    streamed = torch.cat([decoder.push(codes[..., s:s + chunk]) for s in range(0, codes.shape[-1], chunk)], -1)
    decoder.close()
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5


def test_decoder_is_causal(codec):
    """Audio up to frame f depends on codes up to frame f only (what lets the stream return it at once)."""
    codes = codec.encode(torch.randn(1, 1, 400) * 0.3)
    changed = codes.clone()
    changed[..., 30:] = (changed[..., 30:] + 1) % 16
    hop = codec.hop_length
    assert torch.equal(codec.decode(codes)[:, :30 * hop], codec.decode(changed)[:, :30 * hop])
    assert not torch.equal(codec.decode(codes), codec.decode(changed))


def test_istft_head_inverts_a_real_stft():
    """Fed the windowed spectra of a signal, the head's overlap-add gives the signal back (past the first
    n_fft - hop samples, which fewer frames cover)."""
    from codec.nn.istft import ISTFTHead
    head, hop, n_fft = ISTFTHead(4, 32, 8), 8, 32
    signal = torch.randn(1, 400)
    padded = nn.functional.pad(signal, (0, n_fft))[0]
    segments = torch.stack([padded[f * hop:f * hop + n_fft] for f in range(400 // hop)])
    spectra = torch.fft.rfft(segments * head.window, dim=-1)
    frames = (torch.fft.irfft(spectra, n=n_fft, dim=-1) * head.window).T[None]
    rebuilt = head.overlap_add(frames)[:, :400] / head.normalizer(0, 400)
    assert (rebuilt[:, n_fft:] - signal[:, n_fft:]).abs().max() < 1e-5


@pytest.mark.parametrize("integrate_phase", [True, False])
def test_integrated_phase_makes_a_steady_input_a_steady_sinusoid(integrate_phase):
    """Equal frames (a steady input) with one bin lit: the integrated head turns each frame's phase on by the
    bin's own advance and plays a steady sinusoid; the absolute head repeats the same frame every hop, which for
    a bin that turns a quarter cycle per hop is not a sinusoid but a ripple at the frame rate."""
    from codec.nn.istft import ISTFTHead
    hop, n_fft, k = 8, 32, 1
    head = ISTFTHead(4, n_fft, hop, integrate_phase)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.zero_()
        head.linear.bias[:n_fft // 2 + 1] = -30.0  # log magnitudes: silence...
        head.linear.bias[k] = 0.0                  # ...but bin k
    audio = head(torch.zeros(1, 4, 40))[0, 0, n_fft:].double()
    time = torch.arange(n_fft, 40 * hop, dtype=torch.float64)
    sinusoid = torch.stack([torch.cos(2 * torch.pi * k * time / n_fft), torch.sin(2 * torch.pi * k * time / n_fft)], 1)
    fit = sinusoid @ torch.linalg.lstsq(sinusoid, audio[:, None]).solution
    error = (audio - fit[:, 0]).norm() / audio.norm()
    assert error < 1e-5 if integrate_phase else error > 0.1


def test_forward_keeps_length_and_encode_decode_is_batched(codec):
    audio = torch.randn(3, 1, 805) * 0.3
    assert codec(audio).audio.shape == audio.shape
    codes = codec.encode(audio)
    assert torch.equal(codes[1:2], codec.encode(audio[1:2]))
    assert codec.decode(codes, length=805).shape == (3, 805)


def test_folding_weight_norm_keeps_outputs(codec):
    audio = torch.randn(1, 1, 400) * 0.3
    codes, decoded = codec.encode(audio), codec.decode(codec.encode(audio))
    codec.fuse_weight_norm()
    assert torch.equal(codec.encode(audio), codes)
    assert (codec.decode(codes) - decoded).abs().max() < 1e-5
