"""benchmarks/rft_step.py --shape tiny: calibrate steps at the tiny shape, printed as a table."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import rft_step  # noqa: E402


def test_tiny_shape_prints_the_step_breakdown(capsys, tmp_path):
    assert rft_step.main(["--shape", "tiny", "--steps", "2", "--prompts", "2", "--generations", "2",
                          "--new-tokens", "8", "--json", str(tmp_path / "steps.json")]) == 0
    out = capsys.readouterr().out
    assert "| step | programs | compile s | rollout s |" in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2
    assert rows[1].split("|")[2].strip() == "0"  # step 2 compiles nothing
    assert rows[0].split("|")[-2].strip() == "-"  # no MFU on a CPU
