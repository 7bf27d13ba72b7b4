import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file

from codec.train.checkpoint import latest_checkpoint
from codec.train.config import DataConfig, DiscriminatorConfig, TrainConfig
from codec.train.trainer import train
from codec.weights import load

from conftest import tiny_config


def tiny_run(tmp_path, **overrides) -> TrainConfig:
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        noise = np.random.default_rng(0)
        for i in range(3):
            soundfile.write(data / f"{i}.wav", noise.standard_normal(4000 + 1000 * i).astype(np.float32) * 0.1, 16000)
    config = TrainConfig(model=tiny_config(), data=DataConfig(train=str(data), valid=str(data), valid_files=1,
                                                             crop_seconds=0.3, batch_size=2),
                         steps=2, checkpoint_every=1, valid_every=2, warmup_steps=1, out_dir=str(tmp_path / "run"))
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def test_train_resume_and_load(tmp_path):
    config = tiny_run(tmp_path)
    weights = train(config)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000002"
    config.steps = 3
    train(config)  # resumes at step 2 and runs one more
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000003"
    model = load(weights)
    assert model.encode(torch.zeros(1, 800)).shape == (1, 3, 100)
    assert list((tmp_path / "run" / "logs").iterdir())


def test_train_with_discriminators(tmp_path):
    config = tiny_run(tmp_path, discriminator=DiscriminatorConfig(periods=[2, 3], scales=[1], stft_windows=[256],
                                                                  width=0.1, loss="least_squares"))
    train(config)
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert {p.name for p in checkpoint.iterdir()} >= {
        "codec.safetensors", "ema.safetensors", "discriminators.safetensors",
        "codec.optimizer.safetensors", "discriminators.optimizer.safetensors"}


def write_config(tmp_path, steps: int, out: str) -> str:
    config = tiny_run(tmp_path, steps=steps, out_dir=str(tmp_path / out), threads=1)
    import yaml
    from codec.config import to_dict
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    return str(path)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """A run killed mid-way (SIGKILL, no chance to clean up) and resumed ends where an uninterrupted run ends."""
    import signal
    import subprocess
    import sys
    import time
    steps = 6
    subprocess.run([sys.executable, "-m", "codec", "train", "--config", write_config(tmp_path, steps, "whole")],
                   check=True, capture_output=True)
    config = write_config(tmp_path, steps, "killed")
    process = subprocess.Popen([sys.executable, "-m", "codec", "train", "--config", config],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = tmp_path / "killed" / "checkpoints" / "latest"
    while process.poll() is None and not (pointer.is_file() and pointer.read_text() >= "step-00000002"):
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert latest_checkpoint(tmp_path / "killed" / "checkpoints").name < f"step-{steps:08d}"
    subprocess.run([sys.executable, "-m", "codec", "train", "--config", config, "--resume"], check=True,
                   capture_output=True)
    whole = load_file(str(tmp_path / "whole" / "weights.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "weights.safetensors"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.allclose(whole[key], resumed[key], atol=1e-6), key


def test_two_processes_train_together(tmp_path):
    """The multi-process path as the README gives it: `accelerate launch --multi_gpu` on a machine without GPUs
    starts two CPU processes, which must join one gloo group rather than train two copies side by side."""
    import subprocess
    import sys
    config = write_config(tmp_path, 2, "pair")
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                             "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                             "-m", "codec", "train", "--config", config], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 process(es) on cpu" in result.stdout
    assert latest_checkpoint(tmp_path / "pair" / "checkpoints").name == "step-00000002"
    assert load(tmp_path / "pair" / "weights.safetensors").num_codebooks == 3


def test_codec_train_resume_force_and_export_weights(tmp_path, capsys):
    """`codec train` refuses to mix runs; `codec export-weights` makes a file that `codec.load` and `--model` use."""
    from codec.cli import main
    from codec.train.runs import export_weights
    config, run = write_config(tmp_path, 2, "cli"), tmp_path / "cli"
    assert main(["train", "--config", config]) == 0
    assert main(["train", "--config", config]) == 1
    assert "--resume continues it, --force deletes it" in capsys.readouterr().err
    assert main(["train", "--config", config, "--resume", "steps=3"]) == 0  # overrides after the options too
    assert latest_checkpoint(run / "checkpoints").name == "step-00000003"
    assert main(["train", "--config", config, "model.seanet.dimension=4", "--resume"]) == 1
    assert "model.seanet.dimension = 8" in capsys.readouterr().err
    assert main(["train", "--config", config, "steps=1", "--force"]) == 0
    assert latest_checkpoint(run / "checkpoints").name == "step-00000001"

    out = tmp_path / "exported.safetensors"
    assert main(["export-weights", str(run), str(out)]) == 0
    assert main(["export-weights", str(run), str(out)]) == 1  # exists: needs --force
    model = load(out)
    audio = torch.randn(800) * 0.1
    assert model.decode(model.encode(audio, sample_rate=8000)).shape == (1, 800)
    exported, trained = load_file(str(out)), load_file(str(run / "weights.safetensors"))  # the EMA, as trained
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in exported)
    raw, step = export_weights(run / "checkpoints" / "step-00000001", tmp_path / "raw.safetensors", raw=True)
    assert step == 1 and load(raw).num_codebooks == 3
    wav = tmp_path / "a.wav"
    soundfile.write(wav, audio.numpy(), 8000)
    assert main(["encode", "--model", str(out), str(wav), str(tmp_path / "a.codes")]) == 0


@pytest.mark.parametrize("case", ["missing", "unknown_key", "bad_value", "no_data", "out_of_range",
                                  "no_discriminators"])
def test_bad_training_config_is_one_line(tmp_path, case, capsys):
    from codec.cli import main
    config = tmp_path / "config.yaml"
    config.write_text({"missing": "", "unknown_key": "step: 2\n", "bad_value": "steps: many\n",
                       "no_data": "steps: 2\n", "out_of_range": "data: {batch_size: 0}\n",
                       "no_discriminators": "discriminator: {periods: [], scales: [], stft_windows: []}\n"}[case])
    if case == "missing":
        config.unlink()
    assert main(["train", "--config", str(config), f"out_dir={tmp_path / 'run'}"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_warm_start_with_a_new_decoder(tmp_path, capsys):
    """--init-weights from a SEANet-decoder model into an inverse-STFT-decoder run: encoder and quantizer are
    copied, the decoder starts fresh; a different encoder is refused by name."""
    from codec.cli import main
    from codec.train.trainer import Trainer
    source = train(tiny_run(tmp_path))
    config = tiny_run(tmp_path, out_dir=str(tmp_path / "istft"))
    config.model = tiny_config(decoder="istft")
    trainer = Trainer(config, init_weights=str(source))
    previous = load(source)
    codec = trainer.accelerator.unwrap_model(trainer.codec).eval()
    audio = torch.randn(1, 1, 800) * 0.1
    assert torch.equal(codec.encode(audio), previous.encode(audio))
    assert "the decoder starts fresh" in capsys.readouterr().out
    config_path = write_config(tmp_path, 1, "changed")
    assert main(["train", "--config", config_path, "model.seanet.dimension=4", "--init-weights", str(source)]) == 1
    assert "model.seanet.dimension = 8" in capsys.readouterr().err


def test_generator_step_leaves_discriminator_gradients_to_the_discriminator_step(tmp_path):
    """The generator's backward goes through the discriminators without touching their weights' gradients
    (those are the discriminator step's), and leaves them trainable."""
    from codec.train.trainer import Trainer
    config = tiny_run(tmp_path, discriminator=DiscriminatorConfig(periods=[2], scales=[], stft_windows=[256],
                                                                  width=0.1))
    trainer = Trainer(config)
    real = torch.randn(2, 1, 4800) * 0.1
    original = trainer.discriminator_step
    after_discriminator_step = {}

    def recording(*args):
        parts = original(*args)
        after_discriminator_step.update({n: p.grad.clone() for n, p in trainer.discriminators.named_parameters()})
        return parts

    trainer.discriminator_step = recording
    stats, _ = trainer.generator_step(real, step=1)
    assert "adversarial" in stats and torch.isfinite(stats["total"])
    for name, parameter in trainer.discriminators.named_parameters():
        assert parameter.requires_grad
        assert torch.equal(parameter.grad, after_discriminator_step[name]), name


def test_decoder_fine_tuning_from_a_run_keeps_the_codes(tmp_path, capsys):
    """--init-weights from another run's checkpoint brings its EMA generator and its discriminators; with the
    encoder and quantizer frozen, only the decoder moves, so every code keeps its meaning."""
    from codec.train.trainer import Trainer
    discriminator = DiscriminatorConfig(periods=[2], scales=[], stft_windows=[256], width=0.1)
    source = train(tiny_run(tmp_path, discriminator=discriminator))
    config = tiny_run(tmp_path, discriminator=discriminator, out_dir=str(tmp_path / "decoder"),
                      freeze=["encoder", "quantizer"], steps=3, codebook_refit_until=3, codebook_refit_every=1)
    trainer = Trainer(config, init_weights=str(tmp_path / "run"))
    started = load_file(str(latest_checkpoint(tmp_path / "run" / "checkpoints") / "discriminators.safetensors"))
    for name, value in trainer.discriminators.state_dict().items():
        assert torch.equal(value, started[name]), name
    before, after = load(source), load(trainer.fit())
    for part in ("encoder", "quantizer", "decoder"):
        old, new = getattr(before, part).state_dict(), getattr(after, part).state_dict()
        same = all(torch.equal(old[k], new[k]) for k in old)
        assert same == (part != "decoder"), part
    audio = torch.randn(1, 1, 1600) * 0.1
    assert torch.equal(before.encode(audio), after.encode(audio))
    from codec.cli import main
    config_path = write_config(tmp_path, 1, "changed")
    assert main(["train", "--config", config_path, "model.seanet.dimension=4", "--init-weights",
                 str(tmp_path / "run")]) == 1
    assert "model.seanet.dimension = 8" in capsys.readouterr().err


def test_fine_tuning_the_low_latency_decoder_keeps_its_tokens(tmp_path, speech):
    """`--init-weights low-latency` with the encoder and quantizer frozen: the new weights read that model's
    token files (its weights hold -0.0 values, which the EMA turns into 0.0: the tokenizer hash must not care)."""
    import yaml
    from codec.cli import main
    from codec.config import to_dict
    from codec.weights import LOW_LATENCY, read_config
    data = tmp_path / "mine"
    data.mkdir()
    speech.rename(data / "speech.wav")
    config = TrainConfig(model=read_config(LOW_LATENCY),
                         data=DataConfig(train=str(data), crop_seconds=0.2, batch_size=1),
                         freeze=["encoder", "quantizer"], steps=1, warmup_steps=1, checkpoint_every=1,
                         out_dir=str(tmp_path / "run"), threads=1)
    path = tmp_path / "fine.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    assert main(["train", "--config", str(path), "--init-weights", "low-latency"]) == 0
    tuned = tmp_path / "run" / "weights.safetensors"
    assert load(tuned).weights_sha256 != load("low-latency").weights_sha256
    assert main(["encode", "--model", "low-latency", str(data / "speech.wav"), str(tmp_path / "a.codes")]) == 0
    assert main(["decode", "--model", str(tuned), str(tmp_path / "a.codes"), str(tmp_path / "a.wav")]) == 0


def test_non_finite_steps_are_skipped_counted_and_resumed(tmp_path):
    """A NaN loss skips the step (no update, no EMA), counts it, and the count survives a resume."""
    from codec.model import Codec
    from codec.train.checkpoint import checkpoint_state
    from codec.train.config import LossConfig
    config = tiny_run(tmp_path, loss=LossConfig(stft=float("nan")))
    train(config)
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert checkpoint_state(checkpoint) == {"step": 2, "skipped_steps": 2}
    torch.manual_seed(config.seed)
    initial = Codec.from_config(config.model).decoder.state_dict()
    trained = load_file(str(checkpoint / "codec.safetensors"))
    assert all(torch.equal(trained[f"decoder.{k}"], v) for k, v in initial.items())
    config.steps = 3
    train(config)
    assert checkpoint_state(latest_checkpoint(tmp_path / "run" / "checkpoints"))["skipped_steps"] == 3
