"""Shared machinery of the on-device BUA benchmark suites (benchmarks/bench_*.py).

- `settings`: full vs smoke mode, thread count (never more than free cores), cache dir.
- `shapes`, `artifacts`: the models benchmarked (real SmolLM2 bundles per quant type, random
  Qwen2.5-0.5B / 1.5B shapes), built once and cached.
- `workloads`, `sessions`, `torchside`, `rawllama`, `bandwidth`: what each comparison runs.
- `recorder`, `goals`: per-side timings and metrics, ratios against the issue's goals.
- `probe`: peak-RSS measurement in a fresh subprocess.
- `report_md`, `plot`: benchmarks/README.md and results.png from a pytest-benchmark JSON file.
"""
