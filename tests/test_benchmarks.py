"""Every benchmark script runs (tiniest sizes, in this process) and run_all turns their results into a
report. No timing assertions: speed targets live in the benchmarks, not in tests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_all():
    return _load("run_all")


def test_codecs(tmp_path, one_thread, capsys):
    out = _load("bench_codecs").main(["--batch", "1", "--size", "8", "--repeats", "1",
                                      "--json", str(tmp_path / "c.json")])
    assert "normals" in out["codecs"] and all(v > 0 for v in out["codecs"]["normals"].values())
    assert json.loads((tmp_path / "c.json").read_text()) == json.loads(json.dumps(out))
    assert "enc+dec" in capsys.readouterr().out


def test_renderer(tmp_path, capsys):
    assert _load("bench_renderer").main(["--n", "1", "--repeats", "1", "--resolutions", "8", "--spp", "1",
                                         "--json", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[0]["resolution"] == 8 and rows[0]["end_to_end"] > 0


def test_training_table_parses(one_thread, monkeypatch, capsys, run_all):
    module = _load("bench_training")
    monkeypatch.setattr(sys, "argv", ["bench_training.py", "--presets", "smoke", "--steps", "1", "--batch-size", "2"])
    module.main()
    rows = run_all.parse_training(capsys.readouterr().out)
    assert rows["smoke"]["full"] > 0 and rows["smoke"]["lora"] > 0


def test_lightning_overhead_same_work(one_thread, capsys):
    out = _load("bench_lightning_overhead").main(
        ["--preset", "smoke", "--steps", "1", "--warmup", "1", "--repeats", "1", "--batch-size", "2",
         "--checkpoint-every", "1"])
    variants = out["variants"]
    assert set(variants) == {"plain", "banana", "bare"}
    assert variants["banana"]["max_loss_difference_to_plain"] == 0.0   # same batches, same RNG: same losses
    assert variants["bare"]["max_loss_difference_to_plain"] == 0.0
    assert variants["banana"]["checkpoint_writes_per_run"] >= 1
    assert "Lightning/plain" in capsys.readouterr().out


def test_sampling(one_thread, capsys):
    out = _load("bench_sampling").main(["--preset", "smoke", "--steps", "1", "2", "--batch-size", "1",
                                        "--schedulers", "ddim", "euler", "--max-repeats", "1", "--min-seconds", "0"])
    rows = {(r["scheduler"], r["guidance"]): r for r in out["rows"]}
    assert set(rows) == {(s, g) for s in ("ddim", "euler") for g in ("off", "on")}
    assert rows[("ddim", "off")]["branches"] == 1 and rows[("ddim", "on")]["branches"] == 3
    assert set(rows[("euler", "on")]["seconds_per_image"]) == {"1", "2"}


def test_run_all_writes_report(tmp_path, run_all):
    out = tmp_path / "benchmarks.md"
    assert run_all.main(["--quick", "--only", "renderer", "--out", str(out), "--note", "test run"]) == 0
    text = out.read_text()
    for expected in ("## Machine", "## Headline numbers", "renderer end-to-end img/s", "gpu_check.sh",
                     "test run", "Quick mode", "| git |"):
        assert expected in text


def test_headlines_from_results(run_all):
    """The headline table reads every benchmark's results (synthetic numbers here)."""
    R = run_all.Result
    bench = {b.name: b for b in run_all.benchmarks(cuda=False)}
    data = {
        "lightning": {"preset": "cpu", "batch_size": 16, "variants": {
            "plain": {"seconds_per_step": 1.0, "ratio_to_plain": 1.0, "seconds_per_checkpoint_write": 0.0},
            "banana": {"seconds_per_step": 1.02, "ratio_to_plain": 1.02, "cpu_ratio_to_plain": 1.01,
                       "overhead_ms_per_step": 20.0, "seconds_per_checkpoint_write": 0.2}}},
        "codecs": {"batch": 16, "size": 256, "codecs": {"normals": {"encode_decode": 3.0}}},
        "renderer": {"rows": [{"resolution": 64, "spp": 1, "end_to_end": 100.0, "render": 120.0}]},
        "sampling": {"guidance": {"off": [1, 1], "on": [3, 1.5]}, "rows": [
            {"scheduler": "ddim", "guidance": g, "seconds_per_image": {"1": 0.1, "10": 0.3}, "per_step": 0.02}
            for g in ("off", "on")]},
    }
    results = {name: R(bench[name], "", 0.0, 0, "", "", d) for name, d in data.items()}
    results["training"] = R(bench["training"], "", 0.0, 0, "", "",
                            run_all.parse_training("cpu             32         9.9        12.0      1.21x\n"))
    text = "\n".join(f"{m} {v}" for m, v, _ in run_all.headlines(results))
    for expected in ("1.020x wall, 1.010x CPU time (+20 ms/step)", "9.9 / 12.0 (1.21x)", "normals 3.0", "100.0",
                     "at 10 steps", "0.300"):
        assert expected in text
