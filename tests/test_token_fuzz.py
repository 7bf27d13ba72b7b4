"""A seeded fuzz of `.codes` files: every mutation is refused in one line with exit code 1, or is a file `codec
encode` could have written (under the checksum: the very file it wrote); never a traceback, never anything left
behind."""
import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from codec.cli import main
from codec.codes_file import DTYPES, _checksum, load_codes

VALUES = [0, -1, 1, "nan", "inf", "-inf", "1e308", "Infinity", "[]", "[Infinity]", f"[{2**63}]", "[1.5]", "[16.0]",
          "[true]", "[0]", "[16, 16, 16, 16]", '""', "x", "150.0", "1.5", "   8000", "8_000", "[[[[[[[", "\x1b[2J\n",
          "[" * 5000]
DTYPE_CHOICES = [torch.float32, torch.bool, torch.int64, torch.int8, torch.uint8, torch.int32]


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture
def original(tmp_path, tiny_weights, speech):
    assert run("encode", "--model", tiny_weights, speech, tmp_path / "a.codes") == 0
    return tmp_path / "a.codes"


def metadata_mutation(rng, original, target):
    with safe_open(str(original), "pt") as handle:
        metadata, codes = dict(handle.metadata()), handle.get_tensor("codes")
    for key in rng.sample(sorted(metadata), rng.randint(1, 3)):
        metadata[key] = str(rng.choice(VALUES))
    if rng.random() < 0.3:
        codes = codes.to(rng.choice(DTYPE_CHOICES))
    if rng.random() < 0.2:
        codes = rng.choice([codes[:, :0], codes[:0], codes[:, :-1], codes.reshape(-1), codes[None]]).contiguous()
    metadata.pop("checksum")  # a file of before the checksum, or one whose checksum was made to fit
    if rng.random() < 0.5 and codes.dtype in DTYPES:
        metadata["checksum"] = _checksum(metadata, codes.dtype, codes)
    save_file({"codes": codes}, str(target), metadata=metadata)


def byte_mutation(rng, original, target):
    data = bytearray(original.read_bytes())
    kind = rng.choice(["flip", "flip", "truncate", "insert", "zero"])
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)):]
    elif kind == "insert":
        position = rng.randrange(len(data))
        data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    else:
        start = rng.randrange(len(data))
        data[start:start + rng.randint(1, 16)] = bytes(min(16, len(data) - start))
    target.write_bytes(bytes(data))


def test_mutated_token_files_are_refused_in_one_line(tmp_path, original, tiny_weights, capsys):
    rng = random.Random(19)
    written = load_codes(original)
    out = tmp_path / "out"
    out.mkdir()
    capsys.readouterr()
    refused = 0
    for trial in range(240):
        mutated = tmp_path / "m.codes"
        (metadata_mutation if trial % 2 else byte_mutation)(rng, original, mutated)
        commands = [("info", mutated)] + ([("decode", "--model", tiny_weights, mutated, out / "m.wav")]
                                          if trial % 8 == 0 else [])
        for command in commands:
            code = run(*command)
            err = capsys.readouterr().err
            assert "Traceback" not in err
            if code == 0:
                tokens = load_codes(mutated)
                assert torch.equal(tokens.codes, written.codes), trial
                if trial % 2 == 0:  # bytes changed under the checksum: only a change that does not matter
                    assert {**vars(tokens), "codes": None} == {**vars(written), "codes": None}, trial
                elif command[0] == "decode":  # metadata rewritten, checksum and all: what decoding relies on
                    assert (tokens.sample_rate, tokens.frame_rate, tokens.codebook_sizes) == \
                        (written.sample_rate, written.frame_rate, written.codebook_sizes), trial
            else:
                refused += 1
                assert code == 1 and err.count("\n") == 1 and err.startswith("error: "), (trial, err)
            assert sorted(p.name for p in out.iterdir()) == (["m.wav"] if code == 0 and command[0] == "decode"
                                                                 else []), trial
            (out / "m.wav").unlink(missing_ok=True)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("out", "speech.wav", "tiny.safetensors")) \
            == ["a.codes", "m.codes"], trial
    assert refused > 200  # the fuzz reaches the checks, not only harmless bytes


def test_same_input_makes_the_same_bytes(tmp_path, tiny_weights, speech):
    """Metadata order came from a hash map seeded per process: two runs gave two files."""
    import subprocess
    import sys
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "codec", "encode", "--model", str(tiny_weights), str(speech),
                        str(tmp_path / f"{name}.codes")], check=True)
    assert (tmp_path / "a.codes").read_bytes() == (tmp_path / "b.codes").read_bytes()
