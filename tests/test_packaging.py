"""The package's promises about itself: metadata agrees, the CLI documents itself."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = [r for r in pip_section if not r.startswith("-e")]
    assert {_name(r): r.replace(" ", "") for r in listed} == {_name(r): r.replace(" ", "") for r in declared}


def test_makefile_pins_the_cpu_torch_wheel_and_ci_runs_the_readme_test_command():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, flags=re.M)


def _banana(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "banana.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("command", [[], ["world"], ["world", "build"], ["world", "info"],
                                     ["world", "preview"], ["pretrain"], ["tune"], ["reproduce"]])
def test_every_subcommand_has_help(command):
    result = _banana(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: banana" in result.stdout


def test_cli_reports_a_missing_dataset_without_a_traceback(tmp_path):
    result = _banana("world", "info", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr


def test_provenance_records_seed_versions_and_sha(tmp_path):
    from banana.provenance import read_run_info, write_run_info

    write_run_info(tmp_path, {"seed": 7, "path": tmp_path})
    info = read_run_info(tmp_path)
    assert info["seed"] == 7 and info["config"]["path"] == str(tmp_path)
    assert info["packages"]["torch"] and info["packages"]["numpy"]
    assert "git_sha" in info
    with pytest.raises(FileNotFoundError, match="not a banana run directory"):
        read_run_info(tmp_path / "missing")


def test_banana_tune_builds_the_named_recipe_then_the_levers_given():
    from banana.cli import _train_config, build_parser
    from banana.training.recipe import BEST_RECIPE

    parse = build_parser().parse_args
    best = _train_config(parse(["tune", "--profile", "smoke"]), "tune")
    assert all(getattr(best, k) == v for k, v in BEST_RECIPE.items())
    paper = _train_config(parse(["tune", "--recipe", "paper", "--learning-rate", "5e-4"]), "tune")
    assert (paper.tuning, paper.learning_rate, paper.vision_timesteps) == ("lora", 5e-4, "uniform")
    pretrain = _train_config(parse(["pretrain"]), "pretrain")
    assert (pretrain.learning_rate, pretrain.ema_decay, pretrain.condition_init) == (1e-3, 0.999, "keep")
