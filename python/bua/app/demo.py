"""`bua demo`: the product's main job end to end, from nothing to an on-device prediction.

1. events (the built-in daily-life simulator by default; `--data` takes the Foursquare
   check-ins or a CSV/Parquet log), 2. behavior encoder pretraining and 3. the three-stage
   curriculum (both by `bua.training`, on the real SmolLM2-135M-Instruct), 4. `bua-export` to a
   q8_0 bundle (`--quant`), 5. `OnDevicePredictor` on held-out users: one user's history, understanding
   rounds and top-5 next behaviors; Table-1 metrics of on-device BUA next to SASRec and the
   Markov baseline; a generated next day with the Table-2 metrics.

Every step's output lives under runs/demo/<config>-<hash>/, the hash covering the config
file, the data option and the overrides: a rerun reuses finished steps (training resumes where
it stopped) and `--fresh` starts over.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CONFIG = "smollm2-135m-cpu"
QUICK_CONFIG = "tiny-cpu"
SHOWN_HISTORY = 12
EVAL_FORMAT = 20  # ondevice_eval.json's layout and runtime behavior; a cached eval of another format is recomputed
# the run's pretrained behavior encoder scored by its own next-behavior head (PyTorch): what the
# soft tokens are computed from, and in the demo config the teacher of stage 2's predictions
ENCODER_ROW = "behavior encoder alone (its own head)"


def configs_dir() -> Path:
    import bua.training

    return Path(bua.training.__file__).parent / "configs"


@dataclass
class DemoPlan:
    config: Path
    overrides: dict[str, Any]
    root: Path
    quant: str
    threads: int
    generation_samples: int
    quick: bool = False
    explanation_users: int = 20

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def bundle_dir(self) -> Path:
        return self.root / f"bundle-{self.quant}"

    @property
    def eval_path(self) -> Path:
        return self.root / "ondevice_eval.json"


def data_overrides(data: str | None, users: int | None = None, columns: list[str] | None = None) -> dict[str, Any]:
    """Config overrides for `--data`: simulator (default; `users` simulated users, None keeps the
    config's count), foursquare, or a CSV/Parquet path (`columns`: its --column options)."""
    if columns and (data in (None, "simulator", "foursquare")):
        raise ValueError("--column names the columns of a CSV/Parquet log given with --data FILE")
    if data in (None, "simulator"):
        if users is not None and users < 10:
            raise ValueError(f"--users {users}: the 8:1:1 split needs at least 10 users")
        return {} if users is None else {"data.n_users": users}
    if users is not None:
        raise ValueError("--users sets the simulator's user count; it does not apply to --data " + data)
    if data == "foursquare":
        from bua.models.baseline_eval import default_foursquare_dir

        return {"data.source": "foursquare", "data.path": str(default_foursquare_dir())}
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"--data {data!r}: not 'simulator', 'foursquare' or an existing CSV/Parquet file")
    overrides: dict[str, Any] = {"data.source": "table", "data.path": str(path.resolve())}
    if columns:
        from bua.loaders import parse_column_options

        parse_column_options(columns)  # unknown fields fail here, before any training
        overrides["data.columns"] = list(columns)
    return overrides


def make_plan(args: argparse.Namespace) -> DemoPlan:
    name = QUICK_CONFIG if args.quick else (args.config or DEFAULT_CONFIG)
    config = Path(name) if name.endswith((".yaml", ".yml")) else configs_dir() / f"{name}.yaml"
    if not config.is_file():
        known = ", ".join(sorted(p.stem for p in configs_dir().glob("*.yaml")))
        raise FileNotFoundError(f"config {config} not found (known: {known})")
    overrides = data_overrides(args.data, args.users, args.column)
    key = json.dumps({"config": config.read_text(), "overrides": overrides, "quant": args.quant}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return DemoPlan(config, overrides, Path(args.out) / f"{config.stem}-{digest}", args.quant, args.threads,
                    2 if args.quick else args.generation_samples, args.quick,
                    2 if args.quick else args.explanation_users)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:.1f} KiB"


def _say(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 74 - len(title)), flush=True)


# ------------------------------------------------------------------------------------- steps
def step_train(plan: DemoPlan) -> tuple[dict[str, Any], str]:
    from bua.training.checkpoint import read_run
    from bua.training.pipeline import RunOptions, run_curriculum

    record = read_run(plan.run_dir) if (plan.run_dir / "run.json").is_file() else None
    requested = record.get("stages_requested", []) if record else []
    if record and requested and all(record["stages"][s].get("status") == "done" for s in requested):
        return record, "reused"
    run_curriculum(RunOptions(config=plan.config, out=plan.run_dir, resume=record is not None,
                              overrides=plan.overrides, device="cpu", evaluate=False))
    return read_run(plan.run_dir), "resumed" if record else "trained"


def step_export(plan: DemoPlan) -> tuple[Any, str]:
    from bua.export.pipeline import export_run
    from bua.runtime.bundle import Bundle, BundleError

    if plan.bundle_dir.exists():
        try:
            return Bundle.load(plan.bundle_dir, verify=True), "reused"
        except BundleError as err:
            print(f"existing bundle is unusable ({err}); exporting again")
    export_run(plan.run_dir, plan.bundle_dir, plan.quant, force=True, n_threads=plan.threads)
    return Bundle.load(plan.bundle_dir, verify=True), "exported"


def eval_setup(plan: DemoPlan):
    """The training config, the baseline settings (Markov and SASRec) and the test sets: the
    same split and samples the curriculum's own evaluation uses."""
    import dataclasses

    from bua.models.baseline_eval import prepare_eval_data
    from bua.training.config import load_config
    from bua.training.data import load_events
    from bua.training.evaluation import baseline_eval_config

    config = load_config(plan.config, plan.overrides)
    econf = dataclasses.replace(baseline_eval_config(config, progress=True), models=("markov", "SASRec"))
    if plan.quick:
        econf = dataclasses.replace(econf, sasrec_max_epochs=1)
    return config, econf, prepare_eval_data(econf, load_events(config.data))


def _generation_pool(config, edata) -> list:
    from bua.samples import generation_samples

    h = config.data.generation_history_len
    return generation_samples(edata.split.test, h, min_history=min(h, max(2, config.data.history_len // 2)),
                              max_per_user=1)


def explanation_report(predictor, edata, n_users: int) -> dict[str, Any]:
    """The understanding rounds on device for the first natural test sample of `n_users` test
    users, scored by bua.metrics.explanation_metrics; `examples` holds each user's rounds."""
    from tqdm.auto import tqdm

    from bua.dialogue import EXPLAIN_SECTIONS
    from bua.labels.facts import WINDOW_SECTIONS, check_claims, window_sections
    from bua.metrics import explanation_metrics

    samples, users = [], set()
    for s in edata.test_sets["natural"]:
        if s.user_id not in users and len(users) < n_users:
            users.add(s.user_id)
            samples.append(s)
    names = predictor.vocab.behaviors
    histories = [s.history[-predictor.bundle.max_history:] for s in samples]
    explanations = [predictor.predict(h, top_k=1, explain=True).explanation
                    for h in tqdm(histories, desc="on-device BUA, explanations")]
    report = explanation_metrics(explanations, [[names[e.behavior] for e in h] for h in histories], names,
                                 sections=EXPLAIN_SECTIONS)
    # every item the key-behaviors, patterns and summary rounds state, checked against the window
    checked = [check_claims(e[t], window_sections(t, h, predictor.vocab))
               for e, h in zip(explanations, histories) for t in WINDOW_SECTIONS if t in e]
    claims, right = sum(c for c, _ in checked), sum(r for _, r in checked)
    report["fact_claims"] = claims
    report["fact_claims_right"] = right / claims if claims else math.nan
    report["examples"] = [{"user": s.user_id, **e} for s, e in zip(samples, explanations)]
    return report


def explanation_line(report: dict[str, Any]) -> str:
    share = report["mentions_in_history"]
    users = f"{report['users']} test user" + ("s" if report["users"] != 1 else "")
    return (f"understanding rounds of {users}: {report['rounds_repeating_a_line']} of "
            f"{report['rounds']} rounds repeat a line; {report['rounds_in_form']} of {report['rounds_with_sections']} "
            f"hold their label's sections in order; {report['users_naming_a_behavior']} users' rounds name a "
            f"behavior, {report['mentions']} names in all, {share:.0%} of them in that user's history; "
            f"{report['distinct_summaries']} distinct summaries ({report['distinct_summaries_per_user']:.2f} per "
            f"user); {_claims_clause(report)}; {_facts_clause(report)}")


def _facts_clause(report: dict[str, Any]) -> str:
    if not report.get("fact_claims"):
        return "no checkable facts stated"
    return (f"{report['fact_claims']} facts stated (counts, places, runs, times, habits, anchors), "
            f"{report['fact_claims_right']:.0%} of them true of the history")


def _claims_clause(report: dict[str, Any]) -> str:
    if not report["count_claims"]:
        return "no behavior counts claimed"
    top = report["most_frequent_claimed"]
    return (f"{report['count_claims']} behavior counts claimed (\"gaming (3)\"), {report['count_claims_right']:.0%} of "
            f"them right" + ("" if math.isnan(top) else
                             f"; a most frequent behavior among them for {top:.0%} of the users who repeat one"))


def free_lines_line(result: dict[str, Any]) -> str:
    """The share of the unconstrained first attempts' lines that parse, with its standard error
    over the days (a looping day rejects most of its lines at once)."""
    from bua.metrics import ratio_estimate

    lines, parsed = result["generation_free_lines"], result["generation_free_lines_parsed"]
    text = f"unconstrained first attempts: {parsed} of {lines} lines parse"
    if not lines:
        return text
    share, se = ratio_estimate(*zip(*result["generation_free_lines_by_day"]))
    d = result["generation_decoding"]
    sampling = ", ".join(f"{k.replace('_', '-')} {d[k]}" for k in ("temperature", "top_p", "min_p"))
    return text + f" ({share:.1%}" + ("" if math.isnan(se) else f" ± {se:.1%} over days") + f"; {sampling})"


def encoder_scores(encoder_dir: Path, edata) -> dict[str, np.ndarray]:
    """{test set: [N, n_behaviors] probabilities} of the saved encoder's own next-behavior head
    after each history (no fine-tuning)."""
    from bua.models.baselines import EncoderClassifier
    from bua.models.encoder import BehaviorEncoder

    vocab = edata.vocab
    head = EncoderClassifier(vocab.n_behaviors, vocab.n_locations, encoder=BehaviorEncoder.load(encoder_dir))
    return {name: head.predict_scores(samples) for name, samples in edata.test_sets.items()}


def step_evaluate(plan: DemoPlan, predictor, config, econf, edata) -> tuple[dict[str, Any], str]:
    """On-device BUA (fast path) next to the soft-token probe (a linear read-out of the bundle's
    own soft tokens), the behavior encoder alone, SASRec and Markov; explanation and generation
    metrics. Cached."""
    from tqdm.auto import tqdm

    from bua.events import events_to_array
    from bua.fsio import write_bytes
    from bua.metrics import generation_metrics
    from bua.models.baseline_eval import prediction_report, run_baselines
    from bua.runtime.predictor import GENERATION_MIN_P, GENERATION_TEMPERATURE, GENERATION_TOP_P, GenerationError
    from bua.textformat import parse_events_report
    from bua.training.evaluation import PROBE_ROW, repeat_previous_day, soft_token_probe

    bundle_sha = predictor.bundle.files[predictor.bundle.roles["model"]].sha256
    if plan.eval_path.is_file():
        cached = json.loads(plan.eval_path.read_text())
        if (cached.get("bundle_sha256") == bundle_sha and cached.get("format") == EVAL_FORMAT
                and cached.get("scoring") == predictor.scoring):
            return cached, "reused"

    vocab = edata.vocab
    rows: dict[str, dict[str, np.ndarray]] = {"BUA (on-device)": {}}
    t0 = time.monotonic()
    for name, samples in edata.test_sets.items():
        scores = np.stack([predictor.behavior_logprobs(s.history, explain=False)
                           for s in tqdm(samples, desc=f"on-device BUA, {name} test set")])
        rows["BUA (on-device)"][name] = scores
    latency_ms = 1000 * (time.monotonic() - t0) / sum(len(v) for v in edata.test_sets.values())

    def last_soft_tokens(samples) -> np.ndarray:
        return np.stack([predictor.soft_tokens(s.history)[-1]
                         for s in tqdm(samples, desc="soft-token probe features", leave=False)])

    rows[PROBE_ROW] = soft_token_probe(last_soft_tokens, edata.train, edata.test_sets, vocab.n_behaviors,
                                       config.seed)
    rows[ENCODER_ROW] = encoder_scores(plan.run_dir / "encoder", edata)
    baseline_scores, _ = run_baselines(edata, econf)
    rows.update(baseline_scores)
    report = prediction_report(rows, edata.targets(), vocab.n_behaviors, edata.freq_classes,
                               title=f"Next behavior prediction, test users of {edata.name}")

    explanation = explanation_report(predictor, edata, plan.explanation_users)

    pool = _generation_pool(config, edata)[: plan.generation_samples]
    generated, free_texts, failures = [], [], 0
    for s in tqdm(pool, desc="on-device BUA, next-day generation"):
        try:
            day = predictor.generate(s.history[-predictor.bundle.max_history:], explain=False)
            generated.append(events_to_array(day.events))
            free_texts.append(day.free_text)
        except GenerationError as e:
            failures += 1
            generated.append(np.zeros((0, 4), dtype=np.int64))
            free_texts.append(e.attempts[0] if e.attempts else "")
    reference = [events_to_array(s.target_day) for s in pool]
    generation = {
        "BUA (on-device)": generation_metrics(generated, reference, vocab.n_behaviors, vocab.n_locations),
        "repeat previous day": generation_metrics([repeat_previous_day(s) for s in pool], reference,
                                                  vocab.n_behaviors, vocab.n_locations),
    } if pool else {}
    free_lines = [parse_events_report(t, predictor.vocab, source="generated day") for t in free_texts]
    # per day: [lines that parse, lines]
    by_day = [[len(parsed), len(parsed) + len(errors)] for parsed, errors in free_lines]
    result = {"format": EVAL_FORMAT, "bundle_sha256": bundle_sha, "scoring": predictor.scoring,
              "prediction_markdown": report.to_markdown(),
              "prediction": report.to_dict(), "latency_ms_per_prediction": round(latency_ms, 1),
              "explanation": explanation, "generation": generation, "generation_samples": len(pool),
              "generation_decoding": {"temperature": GENERATION_TEMPERATURE, "top_p": GENERATION_TOP_P,
                                      "min_p": GENERATION_MIN_P, "seed": 0},
              "generation_failures": failures,
              # the unconstrained first attempts, line by line, before any grammar-constrained retry
              "generation_free_lines": sum(lines for _, lines in by_day),
              "generation_free_lines_parsed": sum(parsed for parsed, _ in by_day),
              "generation_free_lines_by_day": by_day}
    write_bytes(plan.eval_path, json.dumps(result, indent=2, default=float).encode())
    return result, "evaluated"


# ------------------------------------------------------------------------------------- output
def show_user(edata, predictor) -> None:
    from bua.textformat import format_event, format_events

    sample = edata.test_sets["natural"][0]
    vocab = predictor.vocab
    print(f"held-out user {sample.user_id}: {len(sample.history)} events of history, the last {SHOWN_HISTORY}:")
    for line in format_events(sample.history[-SHOWN_HISTORY:], vocab).split("\n"):
        print(f"  {line}")
    t = time.monotonic()
    result = predictor.predict(sample.history, top_k=5, explain=True)
    seconds = time.monotonic() - t
    for task, text in result.explanation.items():
        print(f"\n[{task}]\n  " + text.replace("\n", "\n  "))
    print(f"\ntop-5 next behaviors ({seconds:.1f} s with the understanding rounds, {result.prompt_tokens} positions):")
    truth = vocab.behaviors[sample.target.behavior]
    for rank, s in enumerate(result.top, 1):
        mark = "   <- true next behavior" if s.behavior == truth else ""
        print(f"  {rank}. {s.behavior:<24} p={s.probability:.3f}{mark}")
    print(f"  true next event: {format_event(sample.target, vocab)}")


def show_generation(config, edata, predictor) -> None:
    from bua.textformat import format_events

    pool = _generation_pool(config, edata)
    if not pool:
        print("no test user has a full next day to generate")
        return
    s = pool[0]
    day = predictor.generate(s.history[-predictor.bundle.max_history:], explain=False)
    print(f"user {s.user_id}, generated next day ({len(day.events)} events"
          f"{', grammar-constrained retry' if day.constrained else ''}):")
    for line in format_events(day.events, predictor.vocab).split("\n")[:16]:
        print(f"  {line}")
    print(f"true next day ({len(s.target_day)} events), first lines:")
    for line in format_events(s.target_day, predictor.vocab).split("\n")[:8]:
        print(f"  {line}")


def _generation_table(gen: dict[str, dict[str, dict[str, float]]]) -> str:
    head = "| model | " + " | ".join(f"{s} BLEU | {s} TVD | {s} JSD" for s in ("event", "timestamp", "location")) + " |"
    sep = "|---" * 10 + "|"
    lines = [head, sep]
    for name, m in gen.items():
        cells = [f"{m[s][k]:.3f}" for s in ("event", "timestamp", "location") for k in ("bleu", "tvd", "jsd")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    from bua import OnDevicePredictor

    plan = make_plan(args)
    if args.fresh and plan.root.exists():
        shutil.rmtree(plan.root)
    plan.root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.monotonic()
    print(f"bua demo: config {plan.config.name}, data {args.data or 'simulator'}, artifacts in {plan.root}")

    _say("1-3. data, behavior encoder pretraining, three-stage curriculum")
    t = time.monotonic()
    record, how = step_train(plan)
    timings["train"] = time.monotonic() - t
    print(f"curriculum {how}: backbone {record['backbone']['name']}, stages "
          + ", ".join(f"{s} {record['stages'][s].get('status')}" for s in ("stage1", "stage2", "stage3")))

    _say(f"4. bua-export --quant {plan.quant}")
    t = time.monotonic()
    bundle, how = step_export(plan)
    timings["export"] = time.monotonic() - t
    sizes = ", ".join(f"{name} {_size(entry.size)}" for name, entry in bundle.files.items())
    print(f"bundle {how}: {plan.bundle_dir} ({sizes})")

    _say("5. OnDevicePredictor on a held-out user")
    t = time.monotonic()
    config, econf, edata = eval_setup(plan)
    predictor = OnDevicePredictor.from_bundle(plan.bundle_dir, n_threads=plan.threads, scoring=config.eval.scoring)
    show_user(edata, predictor)

    _say("Next-behavior prediction on the test users (Table 1 metrics)")
    result, how = step_evaluate(plan, predictor, config, econf, edata)
    print(result["prediction_markdown"])
    print(f"(on-device BUA: fast path, {predictor.scoring} scoring, {result['latency_ms_per_prediction']} ms "
          f"per prediction; {how})")
    print(explanation_line(result["explanation"]))

    _say("Next-day generation")
    show_generation(config, edata, predictor)
    if result["generation"]:
        print(f"\nTable 2 metrics over {result['generation_samples']} test users "
              f"({result['generation_failures']} unparseable):")
        print(_generation_table(result["generation"]))
        print(free_lines_line(result))
    timings["on-device"] = time.monotonic() - t

    _say("Summary")
    total = time.monotonic() - start
    print("time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) + f", total {total / 60:.1f} min")
    print(f"training run:   {plan.run_dir}  (loss curves: {plan.run_dir / 'loss_curves.png'})")
    print(f"bundle:         {plan.bundle_dir}")
    print(f"on-device eval: {plan.eval_path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job end to end: simulate, train, export, predict on device",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="simulator (default), foursquare, or a CSV/Parquet log")
    p.add_argument("--column", action="append", default=[], metavar="FIELD=NAME",
                   help="column of the --data table, as for bua eval (fields of bua.loaders.TableColumns)")
    p.add_argument("--users", type=int, default=None,
                   help="simulated users (default: the config's, 300 for the default config)")
    p.add_argument("--config", default=None, help=f"training config name or YAML path (default {DEFAULT_CONFIG})")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny random backbone ({QUICK_CONFIG}): a minute or two, for CI")
    p.add_argument("--quant", default="q8_0",
                   help="bundle quantization (default q8_0: at 135M parameters q4_k_m changes the top-1 of "
                        "one test sample in seven; docs/ON_DEVICE.md)")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp / onnxruntime threads (default 2)")
    p.add_argument("--generation-samples", type=int, default=10, help="test users for the generation metrics")
    p.add_argument("--explanation-users", type=int, default=20, help="test users for the explanation metrics")
    p.add_argument("--out", default="runs/demo", help="where the steps' artifacts go (default runs/demo)")
    p.add_argument("--fresh", action="store_true", help="delete this configuration's artifacts and start over")
    p.set_defaults(func=run_demo)
