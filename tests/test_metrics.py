"""Metrics: codebook statistics, alignment of rates and lengths, and the MOS predictors (UTMOS22 architecture and
checkpoint layouts with random weights; DistillMOS against its published weights when installed)."""
import importlib.util
import math

import numpy as np
import pytest
import torch

from codec.audio import load_audio
from codec.errors import MetricUnavailable, ModelError
from codec.metrics import codebook, quality, utmos
from codec.metrics import table

from conftest import EXAMPLE


def load_predictors(names, checkpoint=None):
    """The scorers of MOS predictors as `codec eval` loads them, and the unavailable ones' messages."""
    return table.load_scorers(table.select(names), table.Settings(utmos_checkpoint=checkpoint))


def test_codebook_statistics_and_bitrates():
    counter = codebook.CodeCounter([4, 4, 4])
    counter.add(torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]]))  # two of three codebooks used: 4 frames
    counter.add(torch.tensor([[[0, 1, 2, 3], [0, 0, 1, 1]]]))  # a batch of one works too
    first, second = counter.stats()
    assert len(counter.stats()) == 2
    assert (first.used, first.utilization, first.entropy_bits, first.perplexity) == (4, 1.0, 2.0, 4.0)
    assert (second.used, second.utilization, second.entropy_bits, second.perplexity) == (2, 0.5, 1.0, 2.0)
    assert codebook.nominal_bitrate(75, [first, second]) == 75 * 4
    assert codebook.effective_bitrate(75, [first, second]) == 75 * 3


def test_align_resamples_removes_delay_and_pads():
    rate = 8000
    t = np.arange(rate) / rate
    reference = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    late = np.concatenate([np.zeros(160, np.float32), reference[:-400]])  # 20 ms late, tail lost
    pair = quality.align(np.repeat(reference, 3), 24000, late, rate, delay=160)
    assert pair.rate == 24000 and len(pair.decoded) == len(pair.reference) == 3 * rate
    assert np.all(pair.decoded[-3 * 400 + 30:] == 0)  # the lost tail is zeros, charged to the codec
    ref16, dec16 = pair.at(16000)
    assert len(ref16) == len(dec16) == 2 * rate and pair.at(16000)[0] is ref16  # resampled once, then cached


def test_quality_metrics_of_a_perfect_and_a_noisy_copy(speech):
    audio = load_audio(speech, 16000)[0].numpy()
    scorers, _ = table.load_scorers(table.select(["signal"]), table.Settings())

    def score(pair):
        return {metric.name: scorer(pair) for metric, scorer in scorers}
    perfect = score(quality.align(audio, 16000, audio, 16000))
    noisy = score(quality.align(audio, 16000, audio + 0.05 * np.random.default_rng(0).standard_normal(
        len(audio)).astype(np.float32), 16000))
    assert perfect["pesq"] > 4.5 and perfect["stoi"] > 0.99 and perfect["mel_distance"] < 1e-6
    assert noisy["pesq"] < perfect["pesq"] and noisy["si_sdr"] < 20 < perfect["si_sdr"]


# --- UTMOS22 strong: the architecture and both public checkpoint layouts, with synthetic weights ------------
def speechmos_shapes() -> dict[str, tuple[int, ...]]:
    """The tensors of SpeechMOS's utmos22_strong_step7459_v1.pt: our model's, with the weight norm not folded."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in utmos.UTMOS22Strong().state_dict().items()}
    del shapes["wav2vec2.encoder.pos_conv.0.weight"]
    return {**shapes, "wav2vec2.encoder.pos_conv.0.weight_g": (1, 1, 128),
            "wav2vec2.encoder.pos_conv.0.weight_v": (768, 48, 128)}


def speechmos_layout(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict laid out as SpeechMOS's checkpoint."""
    torch.manual_seed(seed)
    state = {k: torch.randn(shape) * 0.02 for k, shape in speechmos_shapes().items()}
    state["wav2vec2.encoder.pos_conv.0.weight_g"] = torch.rand(1, 1, 128) + 0.5
    state["wav2vec2.encoder.pos_conv.0.weight_v"] = torch.randn(768, 48, 128)
    return state


def deterministic_state() -> dict[str, torch.Tensor]:
    """SpeechMOS's layout filled without a random generator, so that the values are the same on every platform:
    element k of the i-th tensor (keys sorted) is sin(0.001 k^2 + i), a chirp, so no weight matrix is low-rank;
    scaled by 1/sqrt(fan-in) for weights, 0.1 for biases and embeddings, 1 + 0.1 sin for the norms' gains, so
    activations keep about unit size through all twelve layers."""
    state = {}
    for i, (key, shape) in enumerate(sorted(speechmos_shapes().items())):
        k = torch.arange(math.prod(shape), dtype=torch.float64)
        wave = torch.sin(k * k * 1e-3 + i).reshape(shape)
        if len(shape) >= 2:
            value = wave / math.sqrt(math.prod(shape[1:]))
        else:
            value = 1 + 0.1 * wave if key.endswith(".weight") else 0.1 * wave
        state[key] = value.float()
    return state


def deterministic_audio(samples: int) -> torch.Tensor:
    """(1, samples) at 16 kHz: a 150 Hz voice-like tone with its third harmonic, 4 Hz tremolo, and a chirp."""
    t = torch.arange(samples, dtype=torch.float64) / 16000
    voiced = torch.sin(2 * math.pi * 150 * t) + 0.5 * torch.sin(2 * math.pi * 450 * t)
    chirp = torch.sin(2 * math.pi * (500 + 1500 * t) * t)
    return (0.2 * voiced * (1 + torch.sin(2 * math.pi * 4 * t)) + 0.05 * chirp).float()[None]


def lightning_layout(speechmos: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official Lightning .ckpt / utmos-pytorch layout of a SpeechMOS state, written out by hand from the
    mapping in shared/notes/mos-predictors.md (not with the code under test)."""
    lightning = {"feature_extractors.1.embedding.weight": torch.randn(3, 128),
                 "output_layers.0.judge_embedding.weight": torch.randn(3000, 128)}
    lightning["feature_extractors.1.embedding.weight"][0] = speechmos["domain_emb"][0]
    lightning["output_layers.0.judge_embedding.weight"][288] = speechmos["judge_emb"][0]
    for key, value in speechmos.items():
        if key.startswith("wav2vec2."):
            lightning["feature_extractors.0.ssl_model." + key[len("wav2vec2."):]] = value
        elif key.startswith("blstm."):
            lightning["output_layers.0.decoder_rnn." + key[len("blstm."):]] = value
        elif key.startswith("projection.0."):
            lightning["output_layers.1.net.0." + key[len("projection.0."):]] = value
        elif key.startswith("projection.2."):
            lightning["output_layers.1.net.3." + key[len("projection.2."):]] = value
    return lightning


@pytest.fixture(scope="module")
def speechmos_state():
    return speechmos_layout()


def test_utmos_keys_shapes_and_parameter_count_match_the_published_checkpoint(speechmos_state):
    state = speechmos_state
    assert len(state) == 225 and sum(v.numel() for v in state.values()) == 102_772_865
    expected = {"domain_emb": (1, 128), "judge_emb": (1, 128), "wav2vec2.mask_emb": (768,),
                "wav2vec2.feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
                "wav2vec2.feature_extractor.conv_layers.0.2.weight": (512,),
                "wav2vec2.feature_extractor.conv_layers.4.0.weight": (512, 512, 3),
                "wav2vec2.feature_extractor.conv_layers.6.0.weight": (512, 512, 2),
                "wav2vec2.layer_norm.weight": (512,), "wav2vec2.post_extract_proj.weight": (768, 512),
                "wav2vec2.encoder.pos_conv.0.bias": (768,), "wav2vec2.encoder.pos_conv.0.weight_g": (1, 1, 128),
                "wav2vec2.encoder.pos_conv.0.weight_v": (768, 48, 128), "wav2vec2.encoder.layer_norm.bias": (768,),
                "wav2vec2.encoder.layers.11.self_attn.k_proj.weight": (768, 768),
                "wav2vec2.encoder.layers.11.fc1.weight": (3072, 768),
                "wav2vec2.encoder.layers.0.final_layer_norm.bias": (768,),
                "blstm.weight_ih_l0": (2048, 1024), "blstm.weight_hh_l0_reverse": (2048, 512),
                "blstm.bias_ih_l0_reverse": (2048,), "projection.0.weight": (2048, 1024),
                "projection.2.weight": (1, 2048), "projection.2.bias": (1,)}
    assert {k: tuple(state[k].shape) for k in expected} == expected


def test_utmos_reproduces_the_reference_implementation():
    """The values are SpeechMOS's own model (tarepan/SpeechMOS at ed25eacbfa42 = v1.2.0,
    speechmos/utmos22/strong/model.py and fairseq_alt.py, run unmodified outside this repository with a stub
    for its torchaudio import, whose resample is the identity at 16 kHz) loaded strictly with
    `deterministic_state()` and given `deterministic_audio`, under torch 2.13 on a CPU: the score and three
    wav2vec 2.0 features (frame, channel) of a 49-frame input (odd: the padding path) and a 74-frame one."""
    model = utmos.load_state(deterministic_state())
    reference = {16000: (0.7837729, [-5.941155, 0.440089, -1.999188]),
                 24000: (0.7984943, [-6.010274, 0.336059, -1.843196])}
    for samples, (score, features) in reference.items():
        audio = deterministic_audio(samples)
        with torch.no_grad():
            ours = model.wav2vec2(audio)[0]
        assert [ours[i, j].item() for i, j in ((0, 0), (24, 100), (-1, 767))] == pytest.approx(features, abs=1e-4)
        assert model(audio).item() == pytest.approx(score, abs=2e-5)


def test_lightning_layout_converts_to_the_speechmos_layout(speechmos_state):
    speechmos = speechmos_state
    lightning = lightning_layout(speechmos)
    converted = utmos.lightning_to_speechmos(lightning)
    assert converted.keys() == speechmos.keys()
    assert all(torch.equal(converted[k], speechmos[k]) for k in speechmos)
    audio = torch.randn(1, 16000) * 0.1  # 1 s: 49 frames, so the odd-length padding path runs
    from_speechmos = utmos.load_state(speechmos)(audio)
    from_lightning = utmos.load_state({"state_dict": lightning})(audio)
    assert torch.equal(from_speechmos, from_lightning) and torch.isfinite(from_speechmos).all()
    with pytest.raises(ValueError, match="at least 400 samples"):
        utmos.load_state(speechmos)(audio[:, :399])


class LightningConfig:
    """Stands in for the omegaconf config a Lightning checkpoint pickles: a class the loader must never import."""

    def __init__(self) -> None:
        self.model = {"ssl": "wav2vec_small", "judges": 3000}


class DictOfConfig(dict):
    """Lightning's AttributeDict: a dict subclass, filled through pickle's SETITEMS."""


class RunsCommand:
    """A malicious pickle: unpickling calls `function(argument)`."""

    def __init__(self, function, argument) -> None:
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def test_lightning_checkpoint_loads_without_running_its_pickled_objects(tmp_path, speechmos_state):
    """The official `epoch=3-step=7459.ckpt` pickles its hyper-parameters, which torch's weights_only unpickler
    refuses; they are read as inert stubs, and a payload that would run a command or code is never called."""
    import os
    marker = tmp_path / "pwned"
    hyper = DictOfConfig(cfg=LightningConfig(), judges=[1, 2])
    checkpoint = {"state_dict": lightning_layout(speechmos_state), "hyper_parameters": hyper, "epoch": 3,
                  "payload": [RunsCommand(os.system, f"touch {marker}"),
                              RunsCommand(exec, f"open({str(marker)!r}, 'w').close()")]}
    path = tmp_path / "epoch=3-step=7459.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # what the stubs are for
    predictor = utmos.UTMOS(path)
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    expected = utmos.load_state(speechmos_state)(torch.from_numpy(audio)[None]).item()
    assert predictor(audio) == expected and not marker.exists()


def test_utmos_checkpoint_is_found_through_the_environment_and_loaded_safely(tmp_path, monkeypatch,
                                                                              speechmos_state):
    path = tmp_path / "mine.pt"
    torch.save(speechmos_state, path)
    monkeypatch.setenv("CODEC_UTMOS_CHECKPOINT", str(path))
    predictor = utmos.UTMOS()
    assert math.isfinite(predictor(np.zeros(8000, np.float32))) and math.isnan(predictor(np.zeros(100)))


def test_a_named_checkpoint_that_is_missing_or_broken_is_an_error(tmp_path, monkeypatch):
    """A checkpoint the user named is never quietly replaced by "UTMOS unavailable"; the reason is one line."""
    monkeypatch.delenv("CODEC_UTMOS_CHECKPOINT", raising=False)
    with pytest.raises(ModelError, match=r"nowhere.pt \(from --utmos-checkpoint\): no such file$"):
        load_predictors(["utmos"], tmp_path / "nowhere.pt")
    monkeypatch.setenv("CODEC_UTMOS_CHECKPOINT", str(tmp_path / "gone.pt"))
    with pytest.raises(ModelError, match="from CODEC_UTMOS_CHECKPOINT"):
        load_predictors(["utmos"])
    junk, wrong = tmp_path / "junk.pt", tmp_path / "wrong.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    torch.save({"encoder.weight": torch.zeros(3)}, wrong)
    missing = "224 of its 224 tensors missing, e.g. domain_emb"
    for path, reason in ((junk, "not a PyTorch checkpoint"), (wrong, missing)):
        with pytest.raises(ModelError) as error:
            load_predictors(["utmos"], path)
        message = str(error.value)
        assert message.startswith(f"{path}: ") and reason in message and "\n" not in message
        assert "Lightning" not in message and message.endswith(")")


def test_missing_utmos_checkpoint_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CODEC_UTMOS_CHECKPOINT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    predictors, unavailable = load_predictors(["utmos"])
    assert predictors == []
    message = unavailable["utmos"]
    for expected in ("utmos22_strong_step7459_v1.pt", utmos.CHECKPOINT_URL, "CODEC_UTMOS_CHECKPOINT",
                     str(tmp_path / "cache" / "codec"), str(tmp_path / "torch" / "hub" / "checkpoints")):
        assert expected in message


def test_utmos_golden_value_with_the_real_checkpoint():
    try:
        path = utmos.find_checkpoint()
    except MetricUnavailable:
        pytest.skip("no UTMOS checkpoint on this machine")
    score = utmos.UTMOS(path)(load_audio(EXAMPLE, 16000)[0].numpy())
    assert 3.0 < score < 5.0  # LJSpeech studio speech; record the exact value once a checkpoint is available


# --- DistillMOS with its published weights ---------------------------------------------------------------------
needs_distillmos = pytest.mark.skipif(importlib.util.find_spec("distillmos") is None,
                                      reason="pip install --no-deps distillmos==0.9.1")


@needs_distillmos
def test_distillmos_reproduces_the_reference_implementation():
    """4.584698 and 4.371033 are what the package's own ConvTransformerSQAModel gives for these clips (run
    once with a stub for its torchaudio import); the 15 s clip takes the several-window path."""
    ((metric, scorer),), unavailable = load_predictors(["distillmos"])
    assert metric.name == "distillmos" and unavailable == {}
    audio = load_audio(EXAMPLE, 16000)[0].numpy()
    assert scorer(quality.align(audio, 16000, audio, 16000)) == pytest.approx(4.584698, abs=1e-4)
    from codec.metrics.distillmos import DistillMOS
    predictor = DistillMOS()
    assert predictor(audio) == pytest.approx(4.584698, abs=1e-4)
    assert predictor(audio[:8000]) == pytest.approx(4.371033, abs=1e-4)
    assert predictor(np.concatenate([audio] * 3)) == pytest.approx(4.579298, abs=1e-4)


# --- Intelligibility, speaker and pitch, on real speech against degradations whose direction is certain --------
DATA = __import__("pathlib").Path(__file__).parents[2] / "shared" / "data"   # the project's speech (train split)
EXAMPLE_TEXT = "Produced the block books, which were the immediate predecessors of the true printed book,"  # LJSpeech
needs_data = pytest.mark.skipif(not (DATA / "MANIFEST.tsv").is_file(), reason="shared/data is not beside the repo")


@pytest.fixture(scope="module")
def example16k():
    return load_audio(EXAMPLE, 16000)[0].numpy()


def test_text_normalisation():
    from codec.metrics import asr
    assert asr.normalise("Produced the block-books, which WERE 'the' printer's  book;") == \
        "produced the block books which were the printer's book"
    assert asr.error_rate("the cat sat", "The cat, sat.", "word") == 0
    assert asr.error_rate("the cat sat", "the hat", "word") == pytest.approx(200 / 3)
    assert math.isnan(asr.error_rate("", "anything", "word"))


def test_wer_rises_when_words_are_cut_out(example16k):
    from codec.metrics import asr
    cut = np.concatenate([example16k[:24000], example16k[53000:]])  # "the block books which were the immediate"
    shared = {}  # the reference's transcript, kept across pairs as the evaluation keeps it across systems
    whole = quality.align(example16k, 16000, example16k, 16000, text=EXAMPLE_TEXT, shared=shared)
    cut_pair = quality.align(example16k, 16000, cut, 16000, text=EXAMPLE_TEXT, shared=shared)
    ceiling = asr.wer(whole)
    assert ceiling < 30 and asr.wer(cut_pair) > ceiling + 30 and asr.cer(cut_pair) > asr.cer(whole) + 20
    assert asr.original_error_rates(cut_pair)["wer"] == ceiling  # the original's own, whatever is decoded
    whole.text = cut_pair.text = None  # against the original's transcript instead of the text
    assert asr.wer(whole) == asr.cer(whole) == 0 and asr.wer(cut_pair) > 40 and asr.cer(cut_pair) > 30


@needs_data
def test_a_transcript_does_not_depend_on_what_was_transcribed_before():
    from codec.metrics import asr
    clip = load_audio(DATA / "LJSpeech/TTS/LJ001-0002.wav", 16000)[0].numpy()  # heard differently by a reused decoder
    first = asr.transcribe(clip)
    asr.transcribe(load_audio(DATA / "VCTK/VALL-E-X/vctk_p233_gt.wav", 16000)[0].numpy())
    assert asr.transcribe(clip) == first and "comparatively" in first


@needs_data
def test_speaker_similarity_falls_for_another_speaker(example16k):
    from codec.audio import resample
    from codec.metrics import speaker
    encoder = speaker.load_encoder()

    def similarity(decoded):
        return speaker.similarity(quality.align(example16k, 16000, decoded, 16000), encoder)

    def recording(name):  # another recording, as long as it is: not padded with silence to the example's length
        return float(np.dot(speaker.embed(example16k, encoder), speaker.embed(load_audio(DATA / name, 16000)[0].numpy(),
                                                                               encoder)))
    band_limited = resample(resample(example16k, 16000, 8000), 8000, 16000).numpy()
    assert similarity(example16k) == pytest.approx(1, abs=1e-5) and similarity(band_limited) > 0.8
    assert similarity(example16k * 0.01) > 0.9  # quiet: raised to -30 dBFS as Resemblyzer does
    others = [recording("LibriSpeech/Resemblyzer/1688-142285-0008.flac"), recording("VCTK/VALL-E-X/vctk_p233_gt.wav")]
    assert max(others) < 0.7 < recording("LJSpeech/TTS/LJ001-0002.wav")  # the same reader, another sentence
    assert similarity(np.zeros_like(example16k)) < min(others)  # silence: less of this voice than another voice


def test_f0_rmse_is_near_zero_for_the_same_audio_and_1200_cents_an_octave_up(example16k):
    import librosa
    from codec.audio import resample
    from codec.metrics import pitch
    clip = example16k[:48000]

    shared = {}

    def scores(decoded):
        pair = quality.align(clip, 16000, decoded, 16000, shared=shared)
        return pitch.f0_rmse_cents(pair), pitch.voicing_error(pair), pitch.octave_error_share(pair)
    assert scores(clip) == (0, 0, 0)
    rmse, voicing, octaves = scores(resample(resample(clip, 16000, 8000), 8000, 16000).numpy())
    assert rmse < 30 and voicing < 5 and octaves == 0
    rmse, voicing, octaves = scores(librosa.effects.pitch_shift(clip, sr=16000, n_steps=12))
    assert 1100 < rmse < 1400 and octaves > 80
    silenced = clip.copy()
    silenced[24000:] = 0
    rmse, voicing, octaves = scores(silenced)
    assert rmse < 1 and 30 < voicing < 60  # the second half's voiced frames, about half of all


def test_a_metric_whose_package_is_missing_is_unavailable_with_its_install_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pocketsphinx", None)
    monkeypatch.setitem(__import__("sys").modules, "resemblyzer", None)
    loaded, unavailable = table.load_scorers(table.select(["asr", "speaker", "si_sdr"]), table.Settings())
    assert [m.name for m, _ in loaded] == ["si_sdr"]
    assert unavailable == {"wer": "WER needs pocketsphinx: pip install pocketsphinx jiwer",
                           "cer": "CER needs pocketsphinx: pip install pocketsphinx jiwer",
                           "speaker_similarity": "speaker similarity needs resemblyzer: "
                                                 "pip install --no-deps resemblyzer==0.1.4"}


def test_the_docs_show_the_metric_table():
    docs = (__import__("pathlib").Path(__file__).parents[1] / "docs" / "evaluation.md").read_text()
    assert table.markdown_table() in docs, "docs/evaluation.md: paste `python -m codec.metrics.table`"
    assert [m.name for m in table.METRICS] == list(table.BY_NAME) and {m.family for m in table.METRICS} == \
        set(table.FAMILIES) and all(m.better in ("higher", "lower") for m in table.METRICS)
