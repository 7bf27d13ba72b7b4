import pytest
import torch
from safetensors.torch import save_file

from codec.errors import CodesFileError
from codec.codes_file import CodesFile, load_codes, save_codes


def example(frames=10, sizes=(16, 16)):
    codes = torch.randint(0, 16, (len(sizes), frames))
    return CodesFile(codes, "tiny", "ab" * 32, 8000, 1000.0, frames * 8 - 3, 2, list(sizes))


def test_round_trip_keeps_codes_and_metadata(tmp_path):
    tokens = example()
    save_codes(tmp_path / "a.codes", tokens)
    loaded = load_codes(tmp_path / "a.codes")
    assert torch.equal(loaded.codes, tokens.codes)
    assert (loaded.model_name, loaded.sample_rate, loaded.num_samples, loaded.channels) == ("tiny", 8000, 77, 2)
    assert loaded.codebook_sizes == [16, 16] and loaded.frame_rate == 1000.0
    assert loaded.bitrate == 8000.0
    assert loaded.tokenizer_sha256 == "" and loaded.weights_sha256 == "ab" * 32  # as in files made before it


def test_large_codebooks_are_stored_wide(tmp_path):
    tokens = example(sizes=(262144,))
    tokens.codes[0, 0] = 262143
    save_codes(tmp_path / "a.codes", tokens)
    assert load_codes(tmp_path / "a.codes").codes[0, 0] == 262143


def test_existing_output_is_refused_without_force(tmp_path):
    save_codes(tmp_path / "a.codes", example())
    with pytest.raises(Exception, match="already exists"):
        save_codes(tmp_path / "a.codes", example())
    save_codes(tmp_path / "a.codes", example(), force=True)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign", "frames", "range"])
def test_damaged_files_are_clear_errors(tmp_path, damage):
    path = tmp_path / "a.codes"
    save_codes(path, example())
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a codes file" * 10)
    elif damage == "foreign":
        save_file({"weight": torch.zeros(3)}, str(path))
    elif damage == "frames":
        tokens = example()
        tokens.num_samples = 10_000
        save_codes(path, tokens, force=True)
    elif damage == "range":
        tokens = example()
        tokens.codes[0, 0] = 99
        save_codes(path, tokens, force=True)
    with pytest.raises(CodesFileError, match="a.codes"):
        load_codes(path)
