"""Speed and memory benchmarks, run side by side on this machine: `codec bench` (see `codec bench --help`).

1. SimVQ training step (forward + backward) at several K, against vector-quantize-pytorch's SimVQ on the same
   input, with the time of one fp32 matmul of the same size (the floor of an fp32 search). Each measurement runs
   in a fresh process, so its peak-memory growth (ru_maxrss after the step minus before it; the frozen basis,
   built before the step, is not counted) is its own.
2. Real-time factor of encode and decode: a codec model against EnCodec 24 kHz (the `encodec` package with
   random weights) at the same bitrate. Without `encodec` the model's own row stays and a note says how to get it
   (`pip install --no-deps encodec`: its declared torchaudio would pull another torch). With onnxruntime
   installed, a row for the model's ONNX graphs (`codec onnx`) run by onnxruntime beside PyTorch's.
3. Latency: the streaming path's algorithmic latency (a frame, plus no look-ahead: every layer is causal) and the
   compute time per frame, one frame pushed through a stream encoder and decoder at a time, on the CPU and on a
   GPU where one is present.
4. Serving (`--serving`): 32 clips of mixed lengths encoded as one batch against one by one, and 16 live streams
   pushed a frame at a time, stepped together against one by one.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

STEP_PROBE = r"""
import json, resource, sys, time, torch
impl, size, dim, vectors, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(threads)
torch.manual_seed(0)
latents = torch.randn(1, dim, vectors) * 0.5
def update():  # a plain SGD step, so that every step searches a codebook that has just changed, as in training
    with torch.no_grad():
        for parameter in quantizer.parameters():
            if parameter.grad is not None:
                parameter -= 1e-4 * parameter.grad
                parameter.grad = None
if impl == "codec":
    from codec.quantize import SimVQ
    quantizer = SimVQ(dim, size)
    def step():
        x = latents.clone().requires_grad_()
        out = quantizer(x)
        (out.quantized.square().mean() + out.loss).backward()
        update()
elif impl == "vector-quantize-pytorch":
    from vector_quantize_pytorch import SimVQ
    quantizer = SimVQ(dim=dim, codebook_size=size, rotation_trick=False)
    flat = latents.transpose(1, 2).contiguous()  # (1, N, D): latent vectors in a row, as its fastest input layout
    def step():
        x = flat.clone().requires_grad_()
        quantized, _, loss = quantizer(x)
        (quantized.square().mean() + loss).backward()
        update()
if impl not in ("codec", "vector-quantize-pytorch"):  # the floor: one fp32 matmul of the search's size
    a, b = torch.randn(vectors, dim), torch.randn(size, dim)
    def step():
        a @ b.T
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(repeats + 1):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"seconds": sorted(times[1:])[len(times[1:]) // 2], "memory_growth_mib": growth}))
"""


def simvq_step(impl: str, size: int, dim: int = 512, vectors: int = 1500, threads: int = 2,
               repeats: int = 3) -> dict:
    result = subprocess.run([sys.executable, "-c", STEP_PROBE, impl, str(size), str(dim), str(vectors),
                             str(threads), str(repeats)], capture_output=True, text=True)
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def load_encodec(bandwidth: float):
    """EnCodec 24 kHz with random weights. The package imports torchaudio at module top, only for I/O and
    resampling we do not use; torchaudio has no usable CPU build here, so unless it is already loaded an empty
    stub stands in for it (we never import it ourselves)."""
    import types
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    from encodec import EncodecModel
    model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.set_target_bandwidth(bandwidth)
    return model.eval()


def _best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _speed(name: str, kbps: float, encode, decode, seconds: float, repeats: int) -> dict:
    """A row of times real time for `encode()` and `decode()` of `seconds` of audio."""
    encode_x, decode_x = seconds / _best_of(encode, repeats), seconds / _best_of(decode, repeats)
    return {"model": name, "kbps": kbps, "encode_x": encode_x, "decode_x": decode_x,
            "both_x": 1 / (1 / encode_x + 1 / decode_x)}


@torch.no_grad()
def real_time_factors(codec, seconds: float = 10.0, threads: int = 2, repeats: int = 3,
                      with_encodec: bool = True) -> tuple[list[dict], str | None]:
    """Rows for `codec` and, if asked and installed, EnCodec at its bitrate; and a note when EnCodec is missing."""
    torch.set_num_threads(threads)
    audio = torch.randn(1, 1, int(seconds * codec.sample_rate)) * 0.1
    codes = codec.encode(audio)
    kbps = codec.bitrate / 1000
    rows = [_speed(codec.name, kbps, lambda: codec.encode(audio), lambda: codec.decode(codes), seconds, repeats)]
    rows += _onnx_row(codec, audio, codes, seconds, threads, repeats)
    if not with_encodec:
        return rows, None
    try:
        encodec = load_encodec(kbps)
    except ImportError as error:
        return rows, (f"EnCodec comparison skipped ({error}): pip install --no-deps encodec (with einops, which "
                      f"vector-quantize-pytorch brings; --no-deps: its declared torchaudio would pull another torch)")
    frames = encodec.encode(audio)
    rows.append(_speed("encodec_24khz (random weights)", kbps, lambda: encodec.encode(audio),
                       lambda: encodec.decode(frames), seconds, repeats))
    return rows, None


def _onnx_row(codec, audio, codes, seconds: float, threads: int, repeats: int) -> list[dict]:
    """The model's offline graphs in onnxruntime (none without onnx and onnxruntime)."""
    import tempfile
    if not getattr(codec.encoder, "traceable", True):  # no encoder graph to run
        return []
    try:
        from .onnx import export_onnx
        from .onnx_runtime import OnnxCodec
        import onnxruntime  # noqa: F401
    except ImportError:
        return []
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(codec, folder, graphs=("encoder", "decoder"))
        runtime = OnnxCodec(folder, threads=threads)
    samples, ids = audio[:, 0].numpy(), codes.numpy()
    return [_speed(f"{codec.name} (onnxruntime)", codec.bitrate / 1000, lambda: runtime.encode(samples),
                   lambda: runtime.decode(ids), seconds, repeats)]


def _stream_frames(codec, streams: int, frames: int, together: bool) -> float:
    """Seconds to push `frames` frames, one at a time, through `streams` encoder and decoder streams."""
    device = next(codec.parameters()).device
    audio = torch.randn(streams, frames * codec.hop_length, device=device) * 0.1
    encoders = [codec.stream_encoder() for _ in range(streams)]
    decoders = [codec.stream_decoder() for _ in range(streams)]
    hop = codec.hop_length
    start = time.perf_counter()
    for f in range(frames):
        chunk = audio[:, f * hop:(f + 1) * hop]
        if together:
            codes = codec.encode_streams({e: chunk[i:i + 1] for i, e in enumerate(encoders)})
            codec.decode_streams({d: codes[e] for d, e in zip(decoders, encoders)})
        else:
            for i, (e, d) in enumerate(zip(encoders, decoders)):
                d.push(e.push(chunk[i:i + 1]))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def latency(codec, threads: int = 2, frames: int = 75) -> list[str]:
    """Markdown lines: algorithmic latency, and compute per frame on the CPU (and a GPU if present)."""
    torch.set_num_threads(threads)
    frame_ms = 1000 * codec.hop_length / codec.sample_rate
    encoder, decoder = codec.encoder_lookahead, codec.decoder_lookahead
    lookahead = encoder + decoder
    parts = [f"the encoder's look-ahead of {encoder} frames"] * bool(encoder) + \
        [f"the refiner's of {decoder}"] * bool(decoder)
    why = f"plus {' and '.join(parts)}" if parts else "no look-ahead: every layer is causal"
    lines = [f"### Latency ({codec.name})", "",
             f"Algorithmic latency: {frame_ms * (1 + lookahead):.1f} ms (one frame of {codec.hop_length} samples at "
             f"{codec.sample_rate} Hz, {why}). Mimi publishes 80 ms.", "",
             "| device | compute per frame, encode + decode (ms) | share of the frame's duration |", "|---|---|---|"]
    # A frame is a small call, whose ops are too short to split among threads: one thread may be faster.
    runs = [("cpu", n) for n in sorted({1, threads})] + ([("cuda", threads)] if torch.cuda.is_available() else [])
    for device, count in runs:
        torch.set_num_threads(count)
        model = codec.to(device)
        _stream_frames(model, 1, 3, True)  # warm-up
        per_frame = 1000 * _stream_frames(model, 1, frames, True) / frames
        name = f"CPU, {count} threads" if device == "cpu" else torch.cuda.get_device_name()
        lines.append(f"| {name} | {per_frame:.2f} | {per_frame / frame_ms:.0%} |")
    torch.set_num_threads(threads)
    codec.to("cpu")
    return lines


@torch.no_grad()
def serving(codec, threads: int = 2, clips: int = 32, streams: int = 16, frames: int = 75, seed: int = 0) -> list[str]:
    """Markdown lines: batched against one-by-one encoding of mixed-length clips, and streams stepped together
    against one by one, on the CPU and on a GPU if present."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    lengths = (torch.rand(clips, generator=generator) * 7 + 1) * codec.sample_rate  # 1 to 8 s
    audio = [torch.randn(int(n), generator=generator) * 0.1 for n in lengths]
    seconds = float(lengths.sum()) / codec.sample_rate
    lines = ["### Serving", "", "| device | one by one | batched | speed-up |", "|---|---|---|---|"]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        model, on = codec.to(device), [a.to(device) for a in audio]
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        alone = _best_of(lambda: ([model.encode(a) for a in on], sync()), 2)
        batched = _best_of(lambda: (model.encode(on), sync()), 2)
        lines.append(f"| {device}: encode {clips} clips, {seconds:.0f} s | {seconds / alone:.1f}x real time | "
                     f"{seconds / batched:.1f}x real time | {alone / batched:.2f}x |")
        alone = _stream_frames(model, streams, frames, together=False)
        together = _stream_frames(model, streams, frames, together=True)
        audio_seconds = streams * frames * codec.hop_length / codec.sample_rate
        lines.append(f"| {device}: {streams} streams, {frames} frames each, encode + decode | "
                     f"{audio_seconds / alone:.1f}x real time | {audio_seconds / together:.1f}x real time | "
                     f"{alone / together:.2f}x |")
    codec.to("cpu")
    return lines


def run(model: str = "bundled", sizes=(4096, 65536, 262144), threads: int = 2, skip_peers: bool = False,
        with_serving: bool = False) -> str:
    """Run every benchmark and return a Markdown report."""
    from tqdm import tqdm

    from .errors import CodecError
    from .weights import load
    if threads < 1:
        raise CodecError(f"--threads must be at least 1, got {threads}")
    if min(sizes) < 1:
        raise CodecError(f"--sizes must be codebook sizes of at least 1, got {min(sizes)}")
    codec = load(model)  # first: a bad --model is an error before minutes of SimVQ steps, not after
    lines = ["### SimVQ training step (D = 512, N = 1,500 latent vectors, fp32, "
             f"{threads} threads)", "",
             "| K | codec step (s) | codec memory growth (MiB) | vector-quantize-pytorch step (s) | "
             "its memory growth (MiB) | speed-up | fp32 matmul floor (s) |", "|---|---|---|---|---|---|---|"]
    impls = ["codec", "matmul"] + ([] if skip_peers else ["vector-quantize-pytorch"])
    jobs = [(size, impl) for size in sizes for impl in impls]
    results = {job: simvq_step(job[1], job[0], threads=threads) for job in tqdm(jobs, desc="SimVQ steps")}
    for size in sizes:
        ours, floor = results[(size, "codec")], results[(size, "matmul")]
        peer = results.get((size, "vector-quantize-pytorch"), {"error": "skipped"})
        def cell(r, key, fmt):
            return format(r[key], fmt) if key in r else r.get("error", "-")
        speedup = f"{peer['seconds'] / ours['seconds']:.2f}x" if "seconds" in peer and "seconds" in ours else "-"
        lines.append(f"| {size:,} | {cell(ours, 'seconds', '.3f')} | {cell(ours, 'memory_growth_mib', '.0f')} | "
                     f"{cell(peer, 'seconds', '.3f')} | {cell(peer, 'memory_growth_mib', '.0f')} | {speedup} | "
                     f"{cell(floor, 'seconds', '.3f')} |")
    lines += ["", f"### Encode / decode speed (10 s of audio, {threads} threads, times real time)", "",
              "| model | kbps | encode | decode | encode + decode |", "|---|---|---|---|---|"]
    rows, note = real_time_factors(codec, threads=threads, with_encodec=not skip_peers)
    for row in rows:
        lines.append(f"| {row['model']} | {row['kbps']:.1f} | {row['encode_x']:.1f}x | {row['decode_x']:.1f}x | "
                     f"{row['both_x']:.1f}x |")
    lines += (["", f"({note})"] if note else [])
    lines += [""] + latency(codec, threads)
    if with_serving:
        lines += [""] + serving(codec, threads)
    return "\n".join(lines)
