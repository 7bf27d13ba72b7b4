import numpy as np
import pytest
import soundfile
import torch

from codec.config import ISTFTDecoderConfig, ModelConfig, QuantizerConfig, SEANetConfig
from codec.model import Codec
from codec.weights import save_weights

EXAMPLE = __import__("pathlib").Path(__file__).parents[1] / "examples" / "LJ001-0004.wav"


def tiny_config(name: str = "tiny", kind: str = "simvq", num_codebooks: int = 3,
                decoder: str = "seanet") -> ModelConfig:
    return ModelConfig(name=name, sample_rate=8000,
                       seanet=SEANetConfig(n_filters=4, ratios=[4, 2], lstm_layers=1, dimension=8),
                       quantizer=QuantizerConfig(kind=kind, codebook_size=16, num_codebooks=num_codebooks),
                       decoder=decoder, istft=ISTFTDecoderConfig(dim=16, hidden_dim=32, num_layers=2, n_fft=16))


@pytest.fixture
def tiny_codec() -> Codec:
    torch.manual_seed(0)
    return Codec.from_config(tiny_config()).eval()


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_weights(Codec.from_config(tiny_config()), path)
    return path


@pytest.fixture
def speech(tmp_path):
    """A real speech clip (LJSpeech, public domain) cut to one second, as a 22.05 kHz WAV."""
    audio, rate = soundfile.read(EXAMPLE, dtype="float32")
    path = tmp_path / "speech.wav"
    soundfile.write(path, audio[rate:2 * rate], rate)
    return path


def write(path, audio, rate=16000, **kwargs):
    soundfile.write(str(path), np.asarray(audio, dtype=np.float32), rate, **kwargs)
    return path
