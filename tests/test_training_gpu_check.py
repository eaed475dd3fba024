"""training/gpu_check.py runs unchanged on a GPU; here its CPU smoke path (tiny shape)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_a_tiny_stage2_step_on_cpu(tmp_path):
    out = tmp_path / "gc.json"
    cmd = [sys.executable, str(ROOT / "training" / "gpu_check.py"), "--device", "cpu", "--shapes", "tiny",
           "--steps", "1", "--warmup", "0", "--data-users", "8", "--profile", "5", "--bua-batch", "3",
           "--trace-dir", str(tmp_path / "traces"), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    tiny = report["shapes"]["tiny"]
    assert tiny["plain"]["tokens_per_s"] > 0 and tiny["bua"]["tokens_per_s"] > 0
    assert tiny["bua"]["real_tokens_per_s"] <= tiny["bua"]["tokens_per_s"]
    assert tiny["bua"]["n_dialogues"] > 0 and tiny["projection"]["hours_8_gpus_of_this_card"] > 0
    assert "[tiny] plain" in proc.stdout
    assert tiny["bua"]["batch"] == 3 and tiny["bua"]["pad_to_multiple"] == 1  # 64 on CUDA
    profile = tiny["bua"]["profile"]  # one more step: its phases and most expensive ops
    assert profile["wall_ms"] > 0 and profile["device_busy_ms"] == 0  # no kernels on a CPU run
    assert set(profile["phases"]) == {"bua.forward", "bua.loss", "bua.backward", "bua.optimizer"}
    assert 0 < sum(profile["phases"].values()) <= profile["wall_ms"] * 1.05
    by_cpu = profile["by_cpu"]
    assert len(by_cpu) == 5 and all(op["count"] >= 1 for op in by_cpu)
    assert [op["self_cpu_ms"] for op in by_cpu] == sorted((op["self_cpu_ms"] for op in by_cpu), reverse=True)
    assert by_cpu[0]["self_cpu_ms"] > 0
    assert "profiled step: wall" in proc.stdout and "bua.backward" in proc.stdout
    import gzip

    trace = json.loads(gzip.decompress((tmp_path / "traces" / "trace-tiny.json.gz").read_bytes()))
    assert any(e.get("name") == "bua.backward" for e in trace["traceEvents"])


def test_gpu_check_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(ROOT / "training" / "gpu_check.py"), "--shapes", "7b"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device visible" in proc.stderr
