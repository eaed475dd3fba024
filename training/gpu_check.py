"""GPU check: a few BUA stage-2 optimizer steps on CUDA in bf16 for Qwen2.5-0.5B- and
Qwen2.5-7B-shaped models (random weights: speed does not depend on weight values), reporting
tokens/s, peak memory and MFU next to a plain transformers + peft step of the same shape
measured in the same process, and the projection to the paper's run.

    python training/gpu_check.py                      # both shapes on cuda, prints + writes JSON
    python training/gpu_check.py --shapes 7b --out gpu_check.json
    python training/gpu_check.py --device cpu --shapes tiny --steps 1   # CPU smoke test
    python training/gpu_check.py --shapes 0.5b --profile 25            # + where one BUA step's time goes

Per shape it measures:
- plain: AutoModelForCausalLM + peft LoRA (r=16, all linear layers), bf16, gradient
  checkpointing, a dense random batch (7B: 8 x 1024 tokens, 0.5B: 16 x 1024), standard HF loss
  over every position (the issue's reference setting);
- bua: BUAModel's stage-2 step (encoder + projector + LoRA trainable, the round-balanced
  loss) on real stage-2 dialogues of the simulator (history 40 events, generation history 100,
  as the paper), batched like training (lengths padded to a multiple of 64 on CUDA), padding
  included; same micro-batch size (--bua-batch: another).
Tokens/s counts every position of the batch (padding included) for both, so the ratio
bua/plain is the share of the plain step's speed that BUA's step reaches (target >= 0.9).
MFU uses the 6N convention (N = all parameters of the LLM; the frozen base still costs its
forward and backward, gradient checkpointing's extra forward is not counted).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

# Reference points from the issue (H200, plain transformers + peft, random weights).
REFERENCE = {"7b": {"tokens_per_s": 7020.0, "peak_gb": 30.3, "mfu": 0.41, "card": "H200"},
             "0.5b": {"tokens_per_s": 39227.0, "card": "H200"}}
# Dense bf16 peak TFLOP/s by device-name substring (no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tie: bool
    batch: int
    seq: int


SHAPES = {
    "0.5b": Shape("Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 151936, True, 16, 1024),
    "7b": Shape("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 152064, False, 8, 1024),
    "tiny": Shape("tiny (CPU smoke test)", 64, 128, 2, 4, 2, 49152, False, 2, 128),
}
LORA_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_backbone(shape: Shape, directory: Path) -> Path:
    """A random-weight Qwen2 checkpoint of `shape` with SmolLM2's tokenizer (ids < vocab)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from bua.backbones import resolve_backbone

    config = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, max_position_embeddings=32768, rope_theta=1e6,
                         tie_word_embeddings=shape.tie, rms_norm_eps=1e-6)
    directory.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        Qwen2ForCausalLM(config)  # validates the config cheaply
    config.save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(resolve_backbone("tiny-qwen2"))).save_pretrained(directory)
    return directory


def _load_random(directory: Path, dtype: torch.dtype, device: torch.device):
    """The LLM with random weights straight on the device (no multi-GB safetensors on disk)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(directory))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def plain_step_speed(directory: Path, shape: Shape, device: torch.device, dtype: torch.dtype, steps: int,
                     warmup: int, checkpointing: bool) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model

    _reset_peak(device)
    base = _load_random(directory, dtype, device)
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_ALL_LINEAR, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (shape.batch, shape.seq), generator=g).to(device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    tokens = shape.batch * shape.seq
    out = {"tokens_per_step": tokens, "step_s": sum(times) / len(times), "peak_gb": _peak_gb(device),
           "n_params": _count_base(model)}
    out["tokens_per_s"] = tokens / out["step_s"]
    del model, base, opt
    return out


def _count_base(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


def bua_step_speed(directory: Path, shape: Shape, device: torch.device, dtype: torch.dtype, steps: int,
                   warmup: int, checkpointing: bool, data_users: int, profile_top: int = 0,
                   batch_size: Optional[int] = None, trace: Optional[Path] = None) -> dict[str, Any]:
    """BUAModel stage-2 optimizer steps on simulator dialogues (paper-length histories), micro-batches
    of `batch_size` dialogues (default: the shape's batch); with `profile_top`, one more step under
    torch.profiler (`profile_step`)."""
    from bua.models.encoder import BehaviorEncoder, EncoderConfig
    from bua.models.projector import Projector, ProjectorConfig, SoftTokenizer
    from bua.training.collate import collate
    from bua.training.config import StageConfig, config_from_dict
    from bua.training.data import build_stage, prepare
    from bua.training.model import BUAModel, resolve_pad_multiple

    _reset_peak(device)
    config = config_from_dict(
        {
            "data": {
                "n_users": data_users,
                "n_days": 14,
                "history_len": 40 if shape.seq >= 512 else 8,
                "generation_history_len": 100 if shape.seq >= 512 else 16,
                "max_length": shape.seq,
            }
        }
    )
    data = prepare(config.data)
    encoder = BehaviorEncoder(
        EncoderConfig.sized(
            "default" if shape.seq >= 512 else "tiny", data.vocab.n_behaviors, data.vocab.n_locations, max_len=128
        )
    ).to(device)
    torch.manual_seed(0)
    projector = Projector(ProjectorConfig(encoder.config.d_model, shape.hidden))
    lm = _load_random(directory, dtype, device)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    if checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.config.use_cache = False
    peft_lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_ALL_LINEAR, task_type="CAUSAL_LM"))
    from bua.dialogue import default_template

    model = BUAModel(
        SoftTokenizer(encoder, projector),
        peft_lm,
        AutoTokenizer.from_pretrained(str(directory)),
        _chat(directory),
        default_template(),
    ).to(device)
    model.set_stage("stage2")
    model.train()
    stage = StageConfig(train_samples_per_user=8, val_samples_per_user=0, generation_fraction=0.3, direct_fraction=0.2)
    examples = build_stage(data, "stage2", stage, config.data, model).train
    examples.sort(key=len, reverse=True)  # the trainer sorts each rank's share by length the same way
    batch_size = batch_size or shape.batch
    pad = resolve_pad_multiple(0, device)  # as the trainer pads
    n_needed = (warmup + steps) * batch_size
    if len(examples) < n_needed:
        raise RuntimeError(f"only {len(examples)} dialogues for {n_needed} needed; raise --data-users")
    # take batches spread over the length distribution, as random global batches would be
    stride = max(1, len(examples) // n_needed)
    pool = examples[::stride][:n_needed]
    opt = torch.optim.AdamW([p for _, p in model.named_trainable()], lr=1e-5)
    step = functools.partial(_bua_train_step, model, opt, device)
    times, padded, real, shapes = [], 0, 0, set()
    for i in range(warmup + steps):
        batch = collate(pool[i * batch_size : (i + 1) * batch_size], model.pad_id, pad).to(device)
        _sync(device)
        t = time.perf_counter()
        step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - t)
            padded += batch.input_ids.numel()
            shapes.add(tuple(batch.input_ids.shape))
            real += batch.n_tokens
    step_s = sum(times) / len(times)
    mean_len = sum(len(e) for e in examples) / len(examples)
    out = {
        "step_s": step_s,
        "tokens_per_s": padded / sum(times),
        "real_tokens_per_s": real / sum(times),
        "padded_tokens_per_step": padded / steps,
        "peak_gb": _peak_gb(device),
        "n_params": _count_base(model.lm),
        "mean_dialogue_tokens": mean_len,
        "n_dialogues": len(examples),
        "batch": batch_size,
        "pad_to_multiple": pad,
        "distinct_shapes": len(shapes),
    }
    if profile_top:
        first = collate(pool[:batch_size], model.pad_id, pad).to(device)
        out["profile"] = profile_step(step, first, device, profile_top, trace)
    del model, lm, opt, step
    return out


PHASES = ("bua.forward", "bua.loss", "bua.backward", "bua.optimizer")


def _bua_train_step(model, opt, device: torch.device, batch) -> None:
    """One optimizer step as the trainer runs it: bf16 base, fp32 LoRA and projector. Its phases
    are labelled (PHASES) for the profiler; the labels cost nothing when no profiler runs."""
    from torch.profiler import record_function

    from bua.training.losses import dialogue_losses, round_losses

    with record_function(PHASES[0]):
        out = model(batch)
    with record_function(PHASES[1]):
        loss = dialogue_losses(round_losses(out.nll, out.loss_rounds, 4), "round_balanced").sum() / len(batch)
    with record_function(PHASES[2]):
        loss.backward()
    with record_function(PHASES[3]):
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)


def profile_step(step, batch, device: torch.device, top: int, trace: Optional[Path] = None) -> dict[str, Any]:
    """One step under torch.profiler: its wall time, the time the device spent in kernels, the
    host time of each phase (backward's includes waiting for the device), and the `top` ops by
    self device time and by self CPU time (a step whose kernels take far less than its wall time
    is bound by the host). `trace`: also a Chrome trace (gzipped). The step's batch shape has been
    seen before, as most are with padded lengths: first-shape costs do not show here."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t = time.perf_counter()
        step(batch)
        wall = time.perf_counter() - t

    def device_us(e) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))

    def row(e) -> dict[str, Any]:
        return {"op": e.key, "count": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "self_device_ms": device_us(e) / 1e3}

    ops = list(prof.key_averages())
    phases = {name: max((e.cpu_time_total / 1e3 for e in ops if e.key == name), default=0.0) for name in PHASES}
    if trace is not None:
        prof.export_chrome_trace(str(trace))  # gzipped by torch for a .gz path
    return {
        "wall_ms": wall * 1e3,
        "device_busy_ms": sum(device_us(e) for e in ops if e.device_type == DeviceType.CUDA) / 1e3,
        "phases": phases,
        "by_device": [row(e) for e in sorted(ops, key=device_us, reverse=True)[:top]],
        "by_cpu": [row(e) for e in sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]],
    }


def _chat(directory: Path):
    from transformers import AutoTokenizer

    from bua.chat import ChatFormat

    return ChatFormat.from_tokenizer(AutoTokenizer.from_pretrained(str(directory)))


def peak_tflops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def projection(bua: dict[str, Any], card_tflops: Optional[float]) -> dict[str, Any]:
    """The paper's run (100k samples, 3 epochs, 8 GPUs) at the measured per-GPU speed."""
    tokens = 100_000 * 3 * bua["mean_dialogue_tokens"]
    pad_factor = bua["tokens_per_s"] / max(bua["real_tokens_per_s"], 1e-9)
    hours_here = tokens * pad_factor / (8 * bua["tokens_per_s"]) / 3600
    out = {"tokens_total": tokens, "hours_8_gpus_of_this_card": hours_here}
    if card_tflops:
        out["hours_8xA100_scaled_by_peak"] = hours_here * card_tflops / PEAK_TFLOPS["A100"]
    return out


def run(shapes: list[str], device: torch.device, steps: int, warmup: int, data_users: int,
        profile_top: int = 0, bua_batch: Optional[int] = None, trace_dir: Optional[Path] = None) -> dict[str, Any]:
    import tempfile

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    checkpointing = device.type == "cuda"
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tflops = peak_tflops(device)
    report: dict[str, Any] = {
        "device": card,
        "dtype": str(dtype),
        "gradient_checkpointing": checkpointing,
        "peak_tflops_bf16": tflops,
        "steps": steps,
        "warmup": warmup,
        "shapes": {},
        "torch": torch.__version__,
        "weights": "random (timings do not depend on weight values)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for key in shapes:
            shape = SHAPES[key]
            directory = make_backbone(shape, Path(tmp) / key)
            plain = plain_step_speed(directory, shape, device, dtype, steps, warmup, checkpointing)
            trace = trace_dir / f"trace-{key}.json.gz" if trace_dir is not None and profile_top else None
            bua = bua_step_speed(directory, shape, device, dtype, steps, warmup, checkpointing, data_users,
                                 profile_top, bua_batch, trace)
            entry = {
                "shape": shape.__dict__,
                "plain": plain,
                "bua": bua,
                "bua_over_plain": bua["tokens_per_s"] / plain["tokens_per_s"],
            }
            for kind in ("plain", "bua"):
                if tflops:
                    entry[kind]["mfu_6n"] = 6 * entry[kind]["n_params"] * entry[kind]["tokens_per_s"] / (tflops * 1e12)
            if key in REFERENCE:
                entry["reference"] = REFERENCE[key]
                entry["bua_over_reference"] = bua["tokens_per_s"] / REFERENCE[key]["tokens_per_s"]
            entry["projection"] = projection(bua, tflops)
            report["shapes"][key] = entry
            print(_row(key, entry), flush=True)
            if "profile" in bua:
                print(_profile_text(bua["profile"]), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return report


def _profile_text(prof: dict[str, Any]) -> str:
    lines = [f"    profiled step: wall {prof['wall_ms']:.1f} ms, device busy {prof['device_busy_ms']:.1f} ms"]
    lines += [f"    {name:16s} host {ms:8.1f} ms" for name, ms in prof["phases"].items()]
    for title, key in (("by self device time", "by_device"), ("by self CPU time", "by_cpu")):
        lines.append(f"    top ops {title}:")
        lines += [f"      {op['op'][:58]:58s} x{op['count']:<6d} device {op['self_device_ms']:8.1f} ms, "
                  f"CPU {op['self_cpu_ms']:8.1f} ms" for op in prof[key]]
    return "\n".join(lines)


def _row(key: str, e: dict[str, Any]) -> str:
    def f(v, fmt="{:.0f}"):
        return "-" if v is None else fmt.format(v)

    return (
        f"[{key}] plain {f(e['plain']['tokens_per_s'])} tok/s, peak {f(e['plain']['peak_gb'], '{:.1f}')} GB, "
        f"MFU {f(e['plain'].get('mfu_6n'), '{:.1%}')} | BUA stage 2 {f(e['bua']['tokens_per_s'])} tok/s "
        f"({f(e['bua']['real_tokens_per_s'])} without padding), peak {f(e['bua']['peak_gb'], '{:.1f}')} GB, "
        f"MFU {f(e['bua'].get('mfu_6n'), '{:.1%}')} | BUA/plain {e['bua_over_plain']:.2f}"
        + (f", BUA/reference {e['bua_over_reference']:.2f}" if "bua_over_reference" in e else "")
        + f" | paper run on 8 of these: {e['projection']['hours_8_gpus_of_this_card']:.1f} h"
    )


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description="BUA stage-2 speed on a GPU (see module doc)")
    p.add_argument("--shapes", default="0.5b,7b", help=f"comma-separated subset of {', '.join(SHAPES)}")
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (smoke test with --shapes tiny)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--data-users", type=int, default=40, help="simulated users for the stage-2 dialogues")
    p.add_argument("--out", type=Path, default=None, help="write the report JSON here")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile one more BUA step and report its N most expensive ops (0: off)")
    p.add_argument("--bua-batch", type=int, default=None, metavar="B",
                   help="dialogues per BUA micro-batch (default: the shape's batch, as the plain step)")
    p.add_argument("--trace-dir", type=Path, default=None,
                   help="with --profile: write the profiled step's Chrome trace here (trace-SHAPE.json.gz)")
    args = p.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        p.error(f"unknown shapes {bad}; valid: {', '.join(SHAPES)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check.py: no CUDA device visible; run it on a GPU machine (or --device cpu --shapes tiny)",
            file=sys.stderr,
        )
        return 2
    if args.trace_dir is not None:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
    report = run(shapes, device, args.steps, args.warmup, args.data_users, args.profile, args.bua_batch,
                 args.trace_dir)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
