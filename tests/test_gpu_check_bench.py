"""bench/gpu_check.py, the correctness part of a GPU session, as a dry run on tiny shapes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path


def _load_bench():
    path = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_dry_run_learns_in_both_half_precisions(tmp_path, capsys):
    bench = _load_bench()
    out = tmp_path / "check.json"
    argv = ["--small", "--device", "cpu", "--steps", "2", "--families", "sd15,sdxl"]
    assert bench.main([*argv, "--dtypes", "fp16,bf16", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["family"], r["dtype"]) for r in rows] == [
        ("sd15", "fp16"),
        ("sd15", "bf16"),
        ("sdxl", "fp16"),
        ("sdxl", "bf16"),
    ]
    for r in rows:
        assert "error" not in r and r["finite"] and len(r["losses"]) == 2
        assert all(math.isfinite(x) for x in r["losses"])
        assert (r["loss_scale"] is not None) == (r["dtype"] == "fp16")  # fp16 is loss-scaled
        assert r["memory"] == {}  # no GPU: no memory figures
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
