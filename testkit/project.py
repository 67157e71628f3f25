"""A copy of the repository (its git-visible files, as a git repository of its own) where the real
pipeline runs: what the end-to-end tests, and tuning/ci_floors.py, train and register into."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from testkit import ROOT

BIN = Path(sys.executable).parent  # the virtual environment's: dvc, gunicorn, mlflow


def run(cmd, cwd, env, check=True, timeout=900):
    """subprocess.run, with the command's output in the error when it fails."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def repo_files():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    return [f for f in listed if f and (ROOT / f).is_file()]


def copy_project(root, mnist_dir, *params_overrides):
    """The repository's git-visible files in root, as a git repository, with params.yaml composed from
    the given Hydra overrides. -> the environment to run its pipeline in (MNIST from mnist_dir, the
    copy's own MLflow store)."""
    for name in repo_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MNIST_DIR": str(mnist_dir)}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MODEL_DIR"):
        env.pop(key, None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        run(cmd, root, env)
    run([sys.executable, "-m", "pipeline.params", *params_overrides], root, env)
    return env


def run_pipeline(root, mnist_dir, *params_overrides):
    """copy_project, then the real `dvc repro` there. -> (the environment used, repro's stdout)."""
    env = copy_project(root, mnist_dir, *params_overrides)
    return env, run([str(BIN / "dvc"), "repro"], root, env).stdout
