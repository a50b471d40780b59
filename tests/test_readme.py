"""The README's generated parts stay generated, and CI runs the README's test command."""

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_variant_table_is_the_generated_one():
    from keras_effnet import list_models
    from keras_effnet.commands import profile as script  # keras-effnet-profile
    readme = (ROOT / "README.md").read_text()
    table = _section(readme, "<!-- variant-table -->", "<!-- /variant-table -->")
    assert table == script.render(script.table(list_models(), None, 1000), "markdown")


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = _section(readme, "<!-- test-command -->", "\n```\n")
    command = block.split("```bash", 1)[1].strip()
    ci = subprocess.run(["bash", str(ROOT / ".ci/run")], env={"CI_PRINT_COMMAND": "1",
                        "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                        check=True).stdout.strip()
    assert ci == command
    assert "pip install" in command and "pytest" in command
