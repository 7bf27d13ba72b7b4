"""Serving (issue 20): batches of any lengths, many live streams through one model, input rates, bad input."""
import pytest
import soundfile
import torch

import codec
from codec.errors import StreamError
from codec.model import Codec

from conftest import EXAMPLE, tiny_config


@pytest.fixture(scope="module")
def bundled():
    return codec.load("bundled")


def speech_clips(rate: int, lengths_ms=(730, 215, 500, 77, 1111)) -> list[torch.Tensor]:
    """Real speech (LJSpeech) cut into clips of mixed lengths, none a whole number of frames, at `rate`."""
    from codec.audio import resample
    audio, source_rate = soundfile.read(EXAMPLE, dtype="float32")
    audio = resample(audio, source_rate, rate)
    clips, start = [], 0
    for ms in lengths_ms:
        length = ms * rate // 1000 + 1
        clips.append(audio[start:start + length])
        start += length // 3
    return clips


def test_batched_encode_and_decode_equal_one_by_one_on_real_speech(bundled):
    clips = speech_clips(bundled.sample_rate)
    batched = bundled.encode(clips)
    alone = [bundled.encode(clip)[0] for clip in clips]
    for clip, codes, single in zip(clips, batched, alone):
        assert codes.shape == single.shape == (bundled.num_codebooks, -(-len(clip) // bundled.hop_length))
        assert torch.equal(codes, single)
    audio = bundled.decode(batched, lengths=[len(c) for c in clips])
    for clip, piece, single in zip(clips, audio, alone):
        expected = bundled.decode(single[None], length=len(clip))[0]
        assert piece.shape == (len(clip),)
        assert (piece - expected).abs().max() < 1e-5


def test_padded_batch_with_lengths_and_input_rate(tiny_weights):
    model = codec.load(tiny_weights)
    clips = speech_clips(16000, (200, 37, 120))
    padded = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    padded[1, 700:] = 0.5  # what lies past a clip's length must not matter
    lengths = [len(c) for c in clips]
    batched = model.encode(padded, 16000, lengths=torch.tensor(lengths), num_codebooks=2)
    for clip, codes in zip(clips, batched):
        assert torch.equal(codes, model.encode(clip, 16000, num_codebooks=2)[0])
    # Decoding a padded batch of codes with sample counts gives each item's own samples.
    codes = torch.nn.utils.rnn.pad_sequence([c.T for c in batched], batch_first=True).transpose(1, 2)
    model_lengths = [c.shape[-1] * model.hop_length - 3 for c in batched]
    for codes_i, audio in zip(batched, model.decode(codes, lengths=model_lengths)):
        assert (audio - model.decode(codes_i[None])[0, :len(audio)]).abs().max() < 1e-5


def test_batches_refuse_bad_lengths(tiny_weights):
    model = codec.load(tiny_weights)
    batch = torch.randn(2, 100) * 0.1
    for call, message in ((lambda: model.encode(batch, lengths=[100]), "1 lengths for a batch of 2"),
                          (lambda: model.encode(batch, lengths=[100, 0]), "clip 1 is empty"),
                          (lambda: model.encode(batch, lengths=[100, 101]), "between 1 and the padded length"),
                          (lambda: model.encode([batch[0], torch.zeros(0)]), "clip 1 is empty"),
                          (lambda: model.encode([]), "no clips"),
                          (lambda: model.decode(model.encode(batch), lengths=[96, 97, 1]), "3 lengths"),
                          (lambda: model.decode(model.encode(batch), lengths=[96, 200]), "item 1: length 200")):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.fixture(params=["seanet", "istft"])
def tiny(request):
    torch.manual_seed(0)
    config = tiny_config(decoder=request.param)
    config.istft.phase = "integrated"
    return Codec.from_config(config).eval()


def test_many_streams_with_their_own_chunkings_equal_offline(tiny):
    """Six streams on one model, started at different times, pushed in batched calls with chunks of different
    sizes (one of them a batch of 2 with fewer codebooks), ended at different times: each equals its offline codes
    and audio."""
    torch.manual_seed(1)
    signals = [torch.randn(b, 1, n) * 0.3 for b, n in ((1, 203), (1, 100), (2, 211), (1, 96), (1, 500), (1, 5))]
    chunks = [7, 8, 13, 96, 50, 1]
    codebooks = [None, None, 2, None, 3, None]
    starts = [0, 2, 1, 5, 0, 7]  # the step at which each stream opens
    encoders = {}
    parts = {i: [] for i in range(len(signals))}
    step = 0
    while True:
        pushes = {}
        for i, (signal, chunk) in enumerate(zip(signals, chunks)):
            position = (step - starts[i]) * chunk
            if step == starts[i]:
                encoders[i] = tiny.stream_encoder(codebooks[i])
            if i in encoders and not encoders[i].closed:
                if position < signal.shape[-1]:
                    pushes[encoders[i]] = signal[..., position:position + chunk]
                else:
                    tail = encoders[i].flush()
                    parts[i] += [tail] if tail is not None else []
        if not pushes and step > max(starts):
            break
        for stream, codes in tiny.encode_streams(pushes).items():
            parts[next(i for i, s in encoders.items() if s is stream)].append(codes)
        step += 1
    codes = {i: torch.cat(parts[i], -1) for i in parts}
    for i, signal in enumerate(signals):
        assert torch.equal(codes[i], tiny.encode(signal, num_codebooks=codebooks[i]))
    # Decoding: the same streams, as decoders, stepped together with their own chunkings.
    decoders = {i: tiny.stream_decoder() for i in codes}
    audio = {i: [] for i in codes}
    for step in range(max(c.shape[-1] for c in codes.values())):
        size = {i: 1 + i % 3 for i in codes}  # 1, 2 or 3 frames a push
        pushes = {decoders[i]: c[..., step * size[i]:(step + 1) * size[i]] for i, c in codes.items()
                  if step * size[i] < c.shape[-1]}
        for stream, piece in tiny.decode_streams(pushes).items():
            audio[next(i for i, s in decoders.items() if s is stream)].append(piece)
    for i, c in codes.items():
        offline = tiny.decode(c)
        assert (torch.cat(audio[i], -1) - offline).abs().max() < 1e-5


def test_a_stream_takes_its_input_rate_or_refuses_another(tiny_weights):
    model = codec.load(tiny_weights)
    audio = speech_clips(22050, (500,))[0]
    with model.stream_encoder() as encoder, pytest.raises(StreamError, match="takes 8000 Hz audio, got 22050"):
        encoder.push(audio, sample_rate=22050)
    encoder = model.stream_encoder(sample_rate=22050)
    parts = [encoder.push(audio[s:s + 1000], sample_rate=22050) for s in range(0, len(audio), 1000)]
    parts.append(encoder.flush())
    streamed = torch.cat(parts, -1)
    offline = model.encode(audio, 22050)
    assert streamed.shape == offline.shape
    # soxr's streaming resampler and its one-shot call differ by rounding: the codes are the same but for ties.
    assert (streamed == offline).float().mean() > 0.95


def test_streams_refuse_bad_pushes(tiny_weights):
    model = codec.load(tiny_weights)
    encoder = model.stream_encoder()
    encoder.push(torch.randn(2, 10))
    with pytest.raises(StreamError, match="batch of 2, got a push of 1"):
        encoder.push(torch.randn(1, 10))
    encoder.flush()
    live = model.stream_encoder()
    audio = torch.randn(1, 20)
    with pytest.raises(StreamError, match="has ended"):  # a refused call leaves every stream as it was
        model.encode_streams({live: audio[:, :10], encoder: torch.randn(2, 10)})
    assert torch.equal(torch.cat([live.push(audio), live.flush()], -1), model.encode(audio))
    decoder = model.stream_decoder(batch_size=1)
    with pytest.raises(StreamError, match="batch of 1, got a push of 3"):
        decoder.push(torch.zeros(3, 3, 2, dtype=torch.long))


def test_save_and_from_pretrained(tmp_path, tiny_weights):
    import json
    from codec.errors import ModelError, OutputError
    from codec.weights import load_weights
    bundled = Codec.from_pretrained("bundled")
    folder = bundled.save_pretrained(tmp_path / "bundled")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["sample_rate"] == bundled.sample_rate and config["frame_rate"] == bundled.frame_rate
    again = Codec.from_pretrained(folder)
    assert again.weights_sha256 == bundled.weights_sha256  # the same file: its .codes files still match
    audio = torch.randn(1, 4000) * 0.1
    assert torch.equal(again.encode(audio), bundled.encode(audio))
    trainable = load_weights(tiny_weights, for_training=True)  # a model in training form is written afresh
    trainable.save_pretrained(tmp_path / "tiny")
    assert torch.equal(Codec.from_pretrained(tmp_path / "tiny").encode(audio), codec.load(tiny_weights).encode(audio))
    with pytest.raises(OutputError, match="exists"):
        trainable.save_pretrained(tmp_path / "tiny")
    config = json.loads((tmp_path / "tiny" / "config.json").read_text())
    config["sample_rate"] = 16000
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(config))
    for path, message in ((tmp_path / "tiny", "'sample_rate' differs"), (tmp_path / "nowhere", "nothing is downloaded"),
                          (tmp_path, "holds model.safetensors")):
        with pytest.raises(ModelError, match=message):
            Codec.from_pretrained(path)


def test_bench_latency_and_serving_tables(tiny):
    """The benchmark tables run and say what they measure (the numbers are benchmarks, not asserted)."""
    from codec.bench import latency, serving
    lines = latency(tiny, threads=1, frames=3)
    assert "Algorithmic latency: 1.0 ms (one frame of 8 samples at 8000 Hz" in lines[2] and "Mimi" in lines[2]
    assert lines[-1].startswith("| CPU, 1 threads |")
    table = serving(tiny, threads=1, clips=3, streams=2, frames=3)
    assert any("encode 3 clips" in line for line in table) and any("2 streams, 3 frames" in line for line in table)


def test_many_files_encode_together_as_each_alone(tmp_path, tiny_weights):
    """`codec encode` steps several files' streams together: each .codes file holds the file's own codes."""
    from codec.audio import load_audio
    from codec.cli import main
    from codec.codes_file import load_codes
    model = codec.load(tiny_weights)
    for i, (ms, rate) in enumerate(((1300, 8000), (250, 16000), (2100, 22050))):
        soundfile.write(tmp_path / f"{i}.wav", speech_clips(rate, (ms,))[0].numpy(), rate)
    assert main(["encode", *(str(tmp_path / f"{i}.wav") for i in range(3)), str(tmp_path / "out"),
                 "--model", str(tiny_weights)]) == 0
    for i in range(3):
        tokens = load_codes(tmp_path / "out" / f"{i}.codes")
        audio = load_audio(tmp_path / f"{i}.wav", model.sample_rate)[0]
        assert torch.equal(tokens.codes, model.encode(audio)[0])
