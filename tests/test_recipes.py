"""Recipes and model configs: every config loads (includes resolved), and the LibriTTS manifest script reads the
download layout."""
import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile

import codec
from codec.config import ModelConfig, load_yaml
from codec.corpus import read_utterances
from codec.errors import ConfigError
from codec.train.config import TrainConfig

RECIPES = Path(__file__).parents[1] / "recipes"
CONFIGS = Path(__file__).parents[1] / "configs"


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_prepare():
    return load_script(RECIPES / "libritts" / "prepare.py")


def fake_libritts(root: Path) -> Path:
    """Two subsets, two utterances each, 0.2 s of noise at 24 kHz, laid out as the download unpacks."""
    noise = np.random.default_rng(0)
    for subset, speaker, chapter in (("train-clean-100", "19", "198"), ("dev-clean", "84", "121123")):
        folder = root / "LibriTTS" / subset / speaker / chapter
        folder.mkdir(parents=True)
        for n in range(2):
            stem = f"{speaker}_{chapter}_000000_00000{n}"
            soundfile.write(folder / f"{stem}.wav", noise.standard_normal(4800).astype(np.float32) * 0.1, 24000)
            (folder / f"{stem}.normalized.txt").write_text(f'He said "hello"\tnumber {n}.\n')
    return root / "LibriTTS"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*/*.yaml")), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_recipe_config_loads(path):
    config = load_yaml(TrainConfig, path)
    assert config.model.sample_rate == 24000 and (path.parent / "README.md").is_file()
    assert not config.data.train and not config.data.valid  # data paths are arguments, never a machine's paths


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_model_config_loads(path):
    assert load_yaml(ModelConfig, path).sample_rate > 0


def test_low_latency_model_config_is_the_shipped_model():
    assert load_yaml(ModelConfig, CONFIGS / "low-latency.yaml") == codec.load("low-latency").config
    assert load_yaml(TrainConfig, RECIPES / "low-latency" / "stage7.yaml").model == codec.load("low-latency").config


def test_include_lays_the_section_over_the_file(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base.yaml").write_text("name: base\nquantizer: {codebook_size: 64, num_codebooks: 2}\n")
    (tmp_path / "recipe.yaml").write_text("model: {include: models/base.yaml, quantizer: {num_codebooks: 3}}\n"
                                          "steps: 7\n")
    config = load_yaml(TrainConfig, tmp_path / "recipe.yaml", ["model.name=mine"])
    assert (config.model.name, config.model.quantizer.codebook_size, config.model.quantizer.num_codebooks,
            config.steps) == ("mine", 64, 3, 7)
    (tmp_path / "stage.yaml").write_text("include: recipe.yaml\nsteps: 9\n")  # a whole recipe, at the top
    config = load_yaml(TrainConfig, tmp_path / "stage.yaml")
    assert (config.model.name, config.model.quantizer.num_codebooks, config.steps) == ("base", 3, 9)


@pytest.mark.parametrize("case", ["missing", "loop", "not_a_name"])
def test_a_bad_include_is_a_one_line_config_error(tmp_path, case):
    text = {"missing": "include: nowhere.yaml\n", "loop": "include: b.yaml\n", "not_a_name": "include: [1]\n"}
    (tmp_path / "a.yaml").write_text(text[case])
    (tmp_path / "b.yaml").write_text("model: {include: a.yaml}\n")
    match = {"missing": r"a.yaml: include .*nowhere.yaml: no such file", "loop": r"include loop: .*a.yaml -> .*b.yaml"
             r" -> .*a.yaml", "not_a_name": "expected a file name"}[case]
    with pytest.raises(ConfigError, match=match) as error:
        load_yaml(TrainConfig, tmp_path / "a.yaml")
    assert "\n" not in str(error.value)


def test_libritts_recipe_is_the_paper_setup():
    config = load_yaml(TrainConfig, RECIPES / "libritts" / "config.yaml")
    assert (config.loss.quantizer, config.loss.mel) == (1000.0, 45.0)
    assert config.model.quantizer.kind == "simvq" and config.discriminator is not None
    assert config.learning_rate == config.discriminator.learning_rate == 1e-4
    assert config.betas == config.discriminator.betas == [0.5, 0.9]
    assert config.codebook_refit_until == 0  # the paper never refits; a refit would reset SimVQ's learned map
    assert not config.data.in_memory  # LibriTTS decoded into memory would not fit


def test_prepare_writes_a_manifest_the_corpus_reads(tmp_path):
    prepare = load_prepare()
    root = fake_libritts(tmp_path / "download")
    manifest = tmp_path / "out" / "libritts.tsv"
    manifest.parent.mkdir()
    assert prepare.main([str(root.parent), str(manifest)]) == 0  # the folder above LibriTTS/ works too
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["split"] for row in rows] == ["train", "train", "valid", "valid"]  # sorted by id
    assert rows[0]["speaker"] == "19" and rows[0]["subset"] == "train-clean-100"
    assert rows[0]["text"] == 'He said "hello"\tnumber 0.'
    train = read_utterances(manifest, "train")
    assert [u.id for u in train] == ["19_198_000000_000000", "19_198_000000_000001"]
    assert all(u.path.is_file() for u in train) and train[0].fields["chapter"] == "198"


@pytest.mark.parametrize("case", ["missing", "subset", "empty", "no_text", "misnamed"])
def test_prepare_explains_a_wrong_layout(tmp_path, case, capsys):
    prepare = load_prepare()
    root = fake_libritts(tmp_path / "download")
    chapter = root / "train-clean-100" / "19" / "198"
    given = {"missing": tmp_path / "nowhere", "subset": root / "train-clean-100", "empty": tmp_path}.get(case, root)
    if case == "no_text":
        (chapter / "19_198_000000_000000.normalized.txt").unlink()
    if case == "misnamed":
        (chapter / "19_198_000000_000000.wav").rename(chapter / "take1.wav")
    assert prepare.main([str(given), str(tmp_path / "m.tsv")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "m.tsv").exists()


def test_low_latency_stages_chain():
    """Each stage of the bundled recipe starts from the previous one's weights: only the part it replaces
    changes (stage 2 the decoder, stage 3 the quantizer's search, stage 4 only the losses, stage 5 only what
    trains, stage 7 the decoder's head, stages 8 and 9 only the losses)."""
    configs = [load_yaml(TrainConfig, RECIPES / "low-latency" / name)
               for name in ("stage1.yaml", "stage2.yaml", "stage3.yaml", "stage4.yaml", "stage5.yaml",
                            "stage7.yaml", "stage8.yaml", "stage9.yaml")]
    first, second, third, fourth, fifth, seventh, eighth, ninth = (config.model for config in configs)
    assert (first.seanet, first.quantizer) == (second.seanet, second.quantizer) and second.decoder == "istft"
    assert (second.seanet, second.decoder, second.istft) == (third.seanet, third.decoder, third.istft)
    assert third.quantizer.code_dim is None and third.quantizer.basis_dim == second.quantizer.code_dim
    assert fourth == third and configs[3].discriminator is not None and configs[2].discriminator is None
    assert fifth == fourth and configs[4].freeze == configs[5].freeze == ["encoder", "quantizer"]
    assert (seventh.seanet, seventh.quantizer, seventh.decoder) == (fifth.seanet, fifth.quantizer, "harmonic")
    size = ("dim", "hidden_dim", "num_layers", "n_fft")  # to_harmonic.py keeps the backbone
    assert [getattr(seventh.harmonic, k) for k in size] == [getattr(fifth.istft, k) for k in size]
    assert eighth == seventh and configs[6].freeze == configs[5].freeze and configs[6].teacher_forced_f0
    assert configs[6].discriminator is not None and configs[5].discriminator is None
    assert ninth == seventh and configs[7].freeze == configs[5].freeze and configs[7].loss.teacher == 1.0


def test_to_harmonic_keeps_the_codes_and_the_backbone(tmp_path):
    import torch
    from codec.model import Codec
    from conftest import tiny_config
    torch.manual_seed(0)
    source = Codec.from_config(tiny_config(decoder="istft")).eval()
    harmonic = load_script(RECIPES / "low-latency" / "to_harmonic.py").to_harmonic(source).eval()
    assert harmonic.config.decoder == "harmonic"
    audio = torch.randn(1, 1, 800) * 0.1
    assert torch.equal(harmonic.encode(audio), source.encode(audio))
    theirs, mine = source.decoder.state_dict(), harmonic.decoder.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs if k.startswith(("embed", "blocks")))
    bins = source.config.istft.n_fft // 2 + 1  # both envelopes start from the trained log-magnitude rows
    rows = mine["head.linear.weight"]
    assert torch.equal(rows[:bins], theirs["head.linear.weight"][:bins]) and torch.equal(rows[bins:], rows[:bins])


def test_unfactorize_keeps_every_code(tmp_path):
    """A factorized model turned into low-rank SimVQ stages decodes any codes to the same latents."""
    import torch
    from codec.config import QuantizerConfig
    from codec.train.runs import export_weights
    from codec.train.trainer import train
    from codec.weights import load_weights
    from conftest import tiny_config
    from test_train import tiny_run
    config = tiny_run(tmp_path, steps=1)
    config.model = tiny_config(decoder="istft")
    config.model.quantizer = QuantizerConfig(codebook_size=16, num_codebooks=3, code_dim=2)
    train(config)
    unfactorize = load_script(RECIPES / "low-latency" / "unfactorize.py").unfactorize
    out = unfactorize(tmp_path / "run" / "checkpoints" / "step-00000001", config.model, tmp_path / "plain.safetensors")
    plain = load_weights(out)
    assert plain.config.quantizer.basis_dim == 2 and plain.config.quantizer.code_dim is None
    export_weights(tmp_path / "run" / "checkpoints" / "step-00000001", tmp_path / "f.safetensors", raw=True,
                   model=config.model)
    factorized = load_weights(tmp_path / "f.safetensors")
    codes = torch.randint(0, 16, (2, 3, 5))
    assert torch.allclose(plain.quantizer.decode(codes), factorized.quantizer.decode(codes), atol=1e-4)
    audio = torch.randn(1, 1, 400) * 0.1
    assert torch.allclose(plain.encoder(audio), factorized.encoder(audio))
