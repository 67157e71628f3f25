"""The image's code is enough to serve: the folders deploy/Dockerfile copies into /app, alone in a folder,
answer like the API with a bundle (MODEL_DIR), through `python -m serve`. No docker engine runs here, so
this is the Dockerfile's own file list, run without this checkout: site-packages on the path without
their .pth files (no editable install of the project), the copied folders and nothing else of it."""
import re
import shutil
import site
import subprocess
import sys

import pytest

from testkit import ROOT
from testkit.images import on_paper


def copied():
    """(source, destination) of each COPY into the working directory, as the Dockerfile says."""
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    pairs = [line.split()[1:] for line in lines if line.startswith("COPY ")]
    return [(source, destination) for *sources, destination in pairs for source in sources
            if not destination.startswith("/") and not source.startswith("requirements")]


def image(tmp_path, leave_out=()):
    app = tmp_path / "app"
    for source, destination in copied():
        if source.rstrip("/") in leave_out:
            continue
        target = app / (destination if not destination.endswith("/") and destination != "." else source)
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / source).is_dir() else shutil.copy)(ROOT / source, target)
    return app


def served(app, bundle, data, tmp_path):
    (tmp_path / "digit.png").write_bytes(data)
    env = {"PATH": "/usr/bin:/bin", "MODEL_DIR": str(bundle), "PYTHONPATH": ":".join(site.getsitepackages())}
    return subprocess.run([sys.executable, "-S", "-m", "serve", "predict", "--json", str(tmp_path / "digit.png")],
                          cwd=app, env=env, capture_output=True, text=True, timeout=120)


def test_the_dockerfile_copies_what_serving_needs(bundle, digits, tmp_path):
    assert [source for source, _ in copied()] == ["digits/", "conf/image.toml", "serve/"]
    app = image(tmp_path)
    assert sorted(p.name for p in app.iterdir()) == ["conf", "digits", "serve"]
    run = served(app, bundle, on_paper(digits[0][0]), tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r'"prediction": \d', run.stdout) and '"model": "digits@3"' in run.stdout


@pytest.mark.parametrize("missing, says", [("digits", "No module named 'digits'"), ("conf/image.toml", "image.toml")])
def test_without_the_core_or_its_settings_the_image_would_not_start(bundle, digits, tmp_path, missing, says):
    run = served(image(tmp_path, leave_out=(missing,)), bundle, on_paper(digits[0][0]), tmp_path)
    assert run.returncode != 0 and says in run.stderr
