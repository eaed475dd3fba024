"""The benchmark suites in smoke mode (tiny stand-in models, one round per side), end to end
through the report command, so benchmarks/ cannot rot. The full run is `python
benchmarks/report.py` on an idle machine (see benchmarks/README.md)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_suites_and_report_run_in_smoke_mode(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--smoke", "--threads", "1",
         "--out-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    results = json.loads((out / "results.json").read_text())
    comparisons = {b["extra_info"]["comparison"] for b in results["benchmarks"]}
    assert comparisons == {str(i) for i in range(1, 9)}
    readme = (out / "README.md").read_text()
    assert "SMOKE" in readme
    for i in range(1, 9):
        assert f"\n## {i}. " in readme
    assert "| threads | 1 " in readme
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
