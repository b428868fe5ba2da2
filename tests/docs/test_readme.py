"""README.md stays true: its configuration reference is the code's, its commands exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckpt import settings_reference
from ckpt.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CODE = "\n".join(re.findall(r"```(?:sh|bash)?\n(.*?)```", README, re.DOTALL))


def test_configuration_reference_matches_the_settings_models() -> None:
    assert settings_reference.splice(README) == README, (
        "README.md's configuration reference is stale: python -m ckpt.settings_reference --write"
    )


def test_every_setting_has_a_meaning() -> None:
    for _, model in settings_reference.PARTS:
        undocumented = [name for name, f in model.model_fields.items() if not f.description]
        assert not undocumented, f"{model.__name__} fields without description: {undocumented}"


COMMANDS = re.findall(r"^ckpt ((?:api|agent|operator) [a-z]+|[a-z]+)", CODE, re.MULTILINE)


@pytest.mark.parametrize("command", sorted(set(COMMANDS)))
def test_ckpt_commands_in_the_readme_exist(command: str) -> None:
    # In process (the typer app behind `ckpt`); the e2e tests run `python -m ckpt` for real.
    result = CliRunner().invoke(cli_app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("target", sorted(set(re.findall(r"make ([a-z][a-z-]*)", README))))
def test_make_targets_in_the_readme_exist(target: str) -> None:
    proc = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


LAYOUT = README.split("## Layout", 1)[1]
# Paths in the Layout section: backticked names with a slash or a file suffix.
LAYOUT_PATHS = sorted({
    p for p in re.findall(r"`([\w./-]+)`", LAYOUT) if "/" in p or re.search(r"\.\w+$", p)
})


def test_the_layout_names_paths_that_exist() -> None:
    assert len(LAYOUT_PATHS) > 10, LAYOUT_PATHS
    missing = [p for p in LAYOUT_PATHS if not (ROOT / p).exists()
               and not any((ROOT / d / p).exists() for d in _LAYOUT_FOLDERS)]
    assert not missing, f"README's Layout names paths that do not exist: {missing}"


# Files the layout names inside a folder it named just before (e.g. `agent/` then `criu.py`).
_LAYOUT_FOLDERS = [p for p in LAYOUT_PATHS if p.endswith("/") and (ROOT / p).is_dir()] + [
    "src/ckpt", "harness", "harness/cluster", "tools", "tests",
    *(str(d.relative_to(ROOT)) for d in (ROOT / "src/ckpt").iterdir() if d.is_dir()),
]
