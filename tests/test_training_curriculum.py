"""`python training/curriculum.py` end to end on tiny-cpu: all three stages with falling loss,
the run directory, the log and plot, evaluation, stage selection errors, resume after SIGKILL
mid-stage, and 2-process (gloo) data parallelism."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bua.training.checkpoint import load_run
from bua.training.runlog import read_log

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny-cpu.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def curriculum(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "training" / "curriculum.py"), "--config", str(TINY), "--threads", "1",
           "--no-progress", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"curriculum failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    curriculum("--out", str(out))
    return out


def _weights(run: Path, stage: str, kind: str = "best") -> dict[str, torch.Tensor]:
    d = run / stage / kind
    out = {f"projector.{k}": v for k, v in load_file(str(d / "projector.safetensors")).items()}
    if (d / "adapter").is_dir():
        out.update({f"adapter.{k}": v for k, v in load_file(str(d / "adapter" / "adapter_model.safetensors")).items()})
    return out


def test_tiny_cpu_trains_all_three_stages_and_loss_falls(full_run):
    record = json.loads((full_run / "run.json").read_text())
    assert record["final_stage"] == "stage3"
    for stage in ("stage1", "stage2", "stage3"):
        s = record["stages"][stage]
        assert s["status"] == "done" and s["steps"] == s["total_steps"] > 0
        assert s["best_val_loss"] < s["first_val_loss"] - 1e-3, (stage, s)
        log = read_log(full_run / stage / "log.jsonl")
        train = [r for r in log if r["type"] == "train"]
        assert [r["step"] for r in train] == list(range(1, s["steps"] + 1))
        assert all({"loss", "lr", "tasks", "rounds", "tokens"} <= set(r) for r in train)
        # model.pad_to_multiple: 32 in tiny-cpu: every micro-batch is B x (a multiple of 32) positions
        assert all(r["positions"] % 32 == 0 and r["positions"] > r["tokens"] for r in train)
        first, last = train[0]["loss"], min(r["loss"] for r in train[-3:])
        assert last < first, (stage, first, last)
    assert record["stages"]["stage2"]["init_from"] == "stage1" and record["stages"]["stage3"]["init_from"] == "stage2"
    # the stage-2 log has every round of the multi-round dialogue and both final tasks
    log2 = [r for r in read_log(full_run / "stage2" / "log.jsonl") if r["type"] == "train"]
    tasks = set().union(*(r["tasks"] for r in log2))
    assert {"key_behaviors", "patterns", "summary", "predict", "generate"} <= tasks
    assert {"0", "1", "2", "3"} <= set().union(*(r["rounds"] for r in log2))
    # warm-up from initial_lr, then cosine decay
    assert log2[0]["lr"] == pytest.approx(1e-3) and max(r["lr"] for r in log2) == pytest.approx(2e-2)
    assert (full_run / "loss_curves.png").stat().st_size > 10_000


def test_run_directory_is_what_export_reads(full_run):
    ck = load_run(full_run)
    assert ck.final_stage == "stage3" and ck.arch == "qwen2" and ck.hidden_size == 64
    assert ck.adapter_dir is not None and (ck.adapter_dir / "adapter_model.safetensors").is_file()
    assert (ck.tokenizer_dir / "tokenizer.json").is_file() and ck.vocab.n_behaviors == 37
    assert ck.dialogue_template.marker == "<behavior_history>" and ck.chat_format.end_of_turn == "<|im_end|>"
    # stage 1 trains only the projector: no adapter; stage 3 keeps the stage-2 projector frozen
    assert load_run(full_run, "stage1").adapter_dir is None
    p2, p3 = _weights(full_run, "stage2"), _weights(full_run, "stage3")
    for k in p2:
        if k.startswith("projector."):
            assert torch.equal(p2[k], p3[k]), k
    assert any(not torch.equal(p2[k], p3[k]) for k in p2 if k.startswith("adapter."))
    # stage 2 moved the stage-1 projector
    p1 = _weights(full_run, "stage1")
    assert any(not torch.equal(p1[k], p2[k]) for k in p1)
    from bua.training.build import load_trained

    model, config, _ = load_trained(full_run)
    assert model.has_adapter and config.model.backbone == "tiny-qwen2"


def test_evaluation_report_puts_bua_next_to_baselines(full_run):
    report = json.loads((full_run / "eval_report.json").read_text())
    for test_set in ("natural", "long_tail"):
        rows = report["prediction"][test_set]
        assert {"BUA", "soft-token probe (read-out ceiling)", "most-frequent", "markov"} <= set(rows)
        assert set(rows["BUA"]) == {"rec_w", "rec_w_se", "prec_w", "overall", "head", "medium", "tail"}
        assert 0.0 <= rows["BUA"]["rec_w"] <= 1.0
        paired = report["prediction_paired"][test_set]
        assert "BUA" not in paired and {"most-frequent", "markov"} <= set(paired)
        diff, se = paired["markov"]
        assert diff == pytest.approx(rows["BUA"]["rec_w"] - rows["markov"]["rec_w"]) and se >= 0
        _, tail_samples = report["prediction_tail_support"][test_set]
        tail_diff, _ = report["prediction_paired_tail"][test_set]["markov"]
        if tail_samples >= 2:
            assert tail_diff == pytest.approx(rows["BUA"]["tail"] - rows["markov"]["tail"])
    gen = report["generation"]
    assert set(gen) == {"BUA", "repeat previous day"}
    assert set(gen["BUA"]) == {"event", "timestamp", "location"}
    md = (full_run / "eval_report.md").read_text()
    assert "| BUA |" in md and "Next-day generation" in md
    assert "BUA minus each other method on the same samples (paired SE): " in md
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["final_stage"] == "stage3" and "eval" in summary


def test_stage_dependencies_and_run_dir_errors_are_clear(tmp_path, full_run):
    proc = curriculum("--out", str(tmp_path / "a"), "--stages", "3", "--no-eval", check=False)
    assert proc.returncode == 2
    assert "stage3 trains only LoRA with the projector frozen" in proc.stderr and "--stages 1,3" in proc.stderr
    proc = curriculum("--out", str(tmp_path / "b"), "--stages", "3", "--no-eval",
                      "--set", "stage3.continue_from=stage2", check=False)
    assert proc.returncode == 2 and "stage3 continues from stage2" in proc.stderr
    proc = curriculum("--out", str(full_run), "--no-eval", check=False)
    assert proc.returncode == 2 and "already holds a run: pass --resume" in proc.stderr
    proc = curriculum("--out", str(full_run), "--resume", "--set", "stage2.loss=token", check=False)
    assert proc.returncode == 2 and "stage2.loss: 'round_balanced' -> 'token'" in proc.stderr
    proc = curriculum("--out", str(tmp_path / "c"), "--set", "stage2.lr=1", check=False)
    assert proc.returncode == 2 and "unknown key(s) 'stage2.lr'" in proc.stderr


def test_resume_after_sigkill_mid_stage_matches_uninterrupted_run(tmp_path, full_run):
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "training" / "curriculum.py"), "--config", str(TINY), "--threads", "1",
           "--no-progress", "--no-eval", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "stage2" / "last" / "trainer_state.pt"
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = json.loads((out / "run.json").read_text())
    assert record["stages"]["stage2"]["status"] == "running", "the kill must land inside stage 2"
    killed_at = torch.load(marker, weights_only=False)["step"]
    assert 0 < killed_at < record["stages"]["stage2"]["total_steps"]
    curriculum("--out", str(out), "--resume", "--no-eval")
    record = json.loads((out / "run.json").read_text())
    assert record["stages"]["stage2"]["resumed"] and record["stages"]["stage2"]["resumed_from"] >= killed_at
    assert record["stages"]["stage1"].get("resumed") is False  # stage 1 finished before the kill: not retrained
    for stage in ("stage2", "stage3"):
        ref = [(r["step"], r["loss"]) for r in read_log(full_run / stage / "log.jsonl") if r["type"] == "train"]
        got = [(r["step"], r["loss"]) for r in read_log(out / stage / "log.jsonl") if r["type"] == "train"]
        assert [s for s, _ in got] == [s for s, _ in ref]
        assert [loss for _, loss in got] == pytest.approx([loss for _, loss in ref], rel=1e-5)
    ref_w, got_w = _weights(full_run, "stage3"), _weights(out, "stage3")
    assert ref_w.keys() == got_w.keys()
    for k in ref_w:
        torch.testing.assert_close(got_w[k], ref_w[k], rtol=1e-5, atol=1e-6)


def test_length_grouped_micro_batches_train_the_same_steps_on_fewer_positions(tmp_path):
    """stage2.micro_batch_overhead regroups each step's dialogues; the gradient is the same sum
    over the same dialogues (no LoRA dropout, fp32), so the runs agree step for step."""
    same = ["--no-eval", "--stages", "1,2", "--set", "model.lora.dropout=0.0",
            "--set", "model.autocast='off'"]
    curriculum(*same, "--out", str(tmp_path / "fixed"))
    curriculum(*same, "--set", "stage2.micro_batch_overhead=16", "--out", str(tmp_path / "grouped"))
    fixed, grouped = ([r for r in read_log(tmp_path / run / "stage2" / "log.jsonl") if r["type"] == "train"]
                      for run in ("fixed", "grouped"))
    assert [r["step"] for r in grouped] == [r["step"] for r in fixed]
    assert [r["tokens"] for r in grouped] == [r["tokens"] for r in fixed]
    assert [r["loss"] for r in grouped] == pytest.approx([r["loss"] for r in fixed], rel=1e-4)
    assert [r["grad_norm"] for r in grouped] == pytest.approx([r["grad_norm"] for r in fixed], rel=1e-3)
    assert sum(r["positions"] for r in grouped) < sum(r["positions"] for r in fixed)
    ref_w, got_w = _weights(tmp_path / "fixed", "stage2", "last"), _weights(tmp_path / "grouped", "stage2", "last")
    for k in ref_w:
        torch.testing.assert_close(got_w[k], ref_w[k], rtol=1e-3, atol=1e-5)


def test_two_process_gloo_replicas_stay_identical(tmp_path):
    out = tmp_path / "ddp"
    common = ["--config", str(TINY), "--threads", "1", "--no-progress", "--no-eval", "--stages", "1,2"]
    # stage 1 in micro-batches of 1: 4 = 1 x 2 accumulation steps (no_sync, then all-reduce) x 2
    # ranks; stage 2 grouped by length (a rank's 2 dialogues in one micro-batch or two, so the
    # ranks may run different numbers) and App. J task weighting (its statistics are all-reduced,
    # so replicas agree)
    micro = ["--set", "stage1.micro_batch_size=1", "--set", "stage2.micro_batch_overhead=16",
             "--set", "stage2.task_weighting.enabled=true", "--set", "stage2.task_weighting.alpha=2.0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "training" / "curriculum.py"), *common, *micro, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    for stage in ("stage1", "stage2"):
        s = record["stages"][stage]
        assert s["status"] == "done" and len(s["replica_digests"]) == 2
        assert s["replica_digests"][0] == s["replica_digests"][1]
        assert s["best_val_loss"] < s["first_val_loss"]
    # the same global batch (4 = 2 per rank x 2 ranks) gives the single-process loss curve
    # (up to float summation order and each rank's own LoRA-dropout noise)
    assert "1 x 2 accum x 2 ranks" in proc.stdout and "App. J task weighting" in proc.stdout
    weighted = [r for r in read_log(out / "stage2" / "log.jsonl") if r["type"] == "train"]
    last = weighted[-1]["task_weights"]
    assert {"key_behaviors", "patterns", "summary", "predict"} <= set(last)
    assert sum(last.values()) == pytest.approx(len(last)) and max(last.values()) > 1.0 > min(last.values())
    single = tmp_path / "single"
    curriculum("--no-eval", "--stages", "1", "--out", str(single))
    a = [r["loss"] for r in read_log(out / "stage1" / "log.jsonl") if r["type"] == "train"]
    b = [r["loss"] for r in read_log(single / "stage1" / "log.jsonl") if r["type"] == "train"]
    assert a == pytest.approx(b, rel=1e-5)  # stage 1 has no dropout on its path (LoRA B = 0)


def test_ablation_runner_reuses_the_full_run_and_collects_table4(tmp_path, full_run):
    out = tmp_path / "abl"
    cmd = [sys.executable, str(ROOT / "training" / "ablations.py"), "--config", str(TINY), "--out", str(out),
           "--full", str(full_run), "--variants", "no_stage3,no_stage2", "--threads", "1", "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = json.loads((out / "ablations.json").read_text())
    assert list(table["prediction"]["natural"]) == ["Ours", "w/o stage3", "w/o stage2"]
    assert set(table["prediction"]["long_tail"]["w/o stage2"]) >= {"rec_w", "overall", "tail"}
    # w/o stage3 is the full run's stage-2 model; w/o stage2 trains stage 3 on the full run's stage 1
    assert json.loads((full_run / "eval_report_stage2.json").read_text())["stage"] == "stage2"
    record = json.loads((out / "no_stage2" / "run.json").read_text())
    assert record["stages"]["stage1"]["copied_from"] == str(full_run)
    assert record["stages"]["stage2"]["status"] == "skipped"
    assert record["stages"]["stage3"]["status"] == "done" and record["stages"]["stage3"]["init_from"] == "stage1"
    p1 = _weights(full_run, "stage1")
    p3 = _weights(out / "no_stage2", "stage3")
    for k in p1:  # stage 3 keeps the stage-1 projector frozen
        assert torch.equal(p1[k], p3[k]), k
    assert "| w/o stage2 |" in (out / "ablations.md").read_text()


def test_init_from_takes_the_finished_stages_of_an_older_run(tmp_path):
    """Default --init-from takes the earlier stages the other run finished (a skipped stage 1
    is not an error), and a run recorded before a config field existed reads as its default."""
    src = tmp_path / "s2"
    curriculum("--out", str(src), "--stages", "2", "--no-eval", "--set", "stage2.max_steps=2")
    record = json.loads((src / "run.json").read_text())
    del record["config"]["data"]["columns"]  # as written before data.columns existed
    (src / "run.json").write_text(json.dumps(record))
    out = tmp_path / "s3"
    curriculum("--out", str(out), "--stages", "3", "--no-eval", "--init-from", str(src), "--set", "stage3.max_steps=1")
    record = json.loads((out / "run.json").read_text())
    assert record["stages"]["stage2"]["copied_from"] == str(src)
    assert record["stages"]["stage1"]["status"] == "skipped" and record["stages"]["stage3"]["status"] == "done"
    proc = curriculum("--out", str(tmp_path / "x"), "--stages", "2", "--no-eval", "--init-from", str(src),
                      "--init-stages", "1", check=False)
    assert proc.returncode == 2 and "its stage1 has status 'skipped'" in proc.stderr


def test_warm_start_runs_only_for_a_stage_that_starts_from_a_fresh_projector(tmp_path):
    """The warm start fits the projector a stage starts from only when no finished stage comes
    before it: a run whose stages all continue a taken stage 1 skips it."""
    warm = ("--set", "encoder.warm_start.enabled=true", "--set", "encoder.warm_start.steps=2")
    src = tmp_path / "s1"
    curriculum("--out", str(src), "--stages", "1", "--no-eval", "--set", "stage1.max_steps=1", *warm)
    assert (src / "projector_warm_start.json").is_file()
    out = tmp_path / "s2"
    proc = curriculum("--out", str(out), "--stages", "2", "--no-eval", "--init-from", str(src),
                      "--set", "stage2.max_steps=1", *warm)
    assert "[warm start] skipped" in proc.stdout
    assert not (out / "projector_warm_start.json").exists()
    assert json.loads((out / "run.json").read_text())["stages"]["stage2"]["init_from"] == "stage1"


@pytest.mark.parametrize("switch, diff", [
    ("data.history_in_reply_tasks=[predict]", "x.history_in_reply_tasks: [] -> ['predict']"),
    ("data.generation_names=true", "x.generation_names: False -> True"),
])
def test_init_from_ignores_a_layout_switch_for_tasks_the_taken_stages_never_render(tmp_path, full_run, switch, diff):
    """Stage 1 never renders a prediction or generation dialogue: a run that moves the prediction's
    history into the reply, or names the history's behaviors in the generate question, may take it
    over; stage 2 renders them, so taking it fails with the difference."""
    layout = ("--set", switch)
    out = tmp_path / "hr"
    curriculum("--out", str(out), "--stages", "2", "--no-eval", "--init-from", str(full_run),
               "--set", "stage2.max_steps=1", *layout)
    record = json.loads((out / "run.json").read_text())
    assert record["stages"]["stage1"]["copied_from"] == str(full_run) and record["stages"]["stage2"]["status"] == "done"
    proc = curriculum("--out", str(tmp_path / "x"), "--stages", "3", "--no-eval", "--init-from", str(full_run),
                      *layout, check=False)
    assert proc.returncode == 2 and diff in proc.stderr, proc.stderr


def test_generation_weight_scales_the_generation_rounds(tmp_path, full_run):
    """Only direct generation dialogues, the same first batch: weight 3 triples the gradient
    (every round is a generation round) and leaves the logged, unweighted loss as it was."""
    first = {}
    for weight in (1.0, 3.0):
        out = tmp_path / f"gw{weight}"
        curriculum("--out", str(out), "--stages", "2", "--no-eval", "--init-from", str(full_run),
                   "--set", "stage2.max_steps=1", "--set", "stage2.generation_fraction=1.0",
                   "--set", "stage2.direct_fraction=1.0", "--set", "stage2.generation_opening_round=true",
                   "--set", f"stage2.generation_weight={weight}")
        first[weight] = [r for r in read_log(out / "stage2" / "log.jsonl") if r.get("type") == "train"][0]
    assert set(first[1.0]["tasks"]) == {"generate"}
    assert first[3.0]["loss"] == pytest.approx(first[1.0]["loss"], rel=1e-5)
    # fp32 (AVX2 hosts) met rel 1e-4; under bf16 autocast (`model.autocast: auto` on a CPU with AVX512-BF16
    # or AMX) the scaled backward rounds differently, measured 5e-4 apart on a Zen 5
    assert first[3.0]["grad_norm"] == pytest.approx(3.0 * first[1.0]["grad_norm"], rel=2e-3)


def test_end_of_turn_weight_reaches_the_gradient_not_the_logged_loss(tmp_path, full_run):
    """The same first batch: weighting the end-of-turn tokens changes the step's gradient and
    leaves the logged (unweighted) loss as it was."""
    first = {}
    for weight in (1.0, 6.0):
        out = tmp_path / f"eot{weight}"
        curriculum("--out", str(out), "--stages", "2", "--no-eval", "--init-from", str(full_run),
                   "--set", "stage2.max_steps=1", "--set", f"stage2.end_of_turn_weight={weight}")
        first[weight] = [r for r in read_log(out / "stage2" / "log.jsonl") if r.get("type") == "train"][0]
    assert first[6.0]["loss"] == pytest.approx(first[1.0]["loss"], rel=1e-5)
    assert abs(first[6.0]["grad_norm"] / first[1.0]["grad_norm"] - 1) > 0.01


def test_distill_weight_adds_the_encoder_kl_to_stage2(tmp_path, full_run):
    """Same first batch and weights: the first step's loss grows by exactly weight x KL."""
    first = {}
    for weight, tau in ((0.0, 0.0), (3.0, 0.0), (3.0, 1.0)):
        out = tmp_path / f"kd{weight}-{tau}"
        curriculum("--out", str(out), "--stages", "2", "--no-eval", "--init-from", str(full_run),
                   "--set", "stage2.max_steps=2", "--set", "stage2.generation_fraction=0.0",
                   "--set", f"stage2.distill_weight={weight}", "--set", f"stage2.distill_prior_adjustment={tau}")
        first[weight, tau] = [r for r in read_log(out / "stage2" / "log.jsonl") if r.get("type") == "train"][0]
    assert "distill" not in first[0.0, 0.0]
    assert first[3.0, 0.0]["distill"] > 0
    # how often the LLM's top-1 is the encoder's: logged with the KL, a share of the predictions
    assert "teacher_top1" not in first[0.0, 0.0]
    assert 0.0 <= first[3.0, 0.0]["teacher_top1"] <= 1.0
    stage2 = json.loads((tmp_path / "kd3.0-0.0" / "summary.json").read_text())["stages"]["stage2"]
    assert 0.0 <= stage2["best_val_teacher_top1"] <= 1.0
    no_kd = json.loads((tmp_path / "kd0.0-0.0" / "summary.json").read_text())["stages"]["stage2"]
    assert no_kd["best_val_teacher_top1"] is None  # NaN, written as null
    kd = first[3.0, 0.0]
    assert kd["loss"] == pytest.approx(first[0.0, 0.0]["loss"] + 3.0 * kd["distill"], rel=1e-4)
    # the training behavior counts reach the KL: the same batch, another divergence
    assert first[3.0, 1.0]["distill"] != pytest.approx(first[3.0, 0.0]["distill"], rel=1e-3)
