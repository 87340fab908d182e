"""The import graph is layered: core modules never import the CLI, rendering or inference glue."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mofusion"
TOP = {"cli", "render", "pipeline", "evaluation", "export", "training"}
CORE = [
    "rotations",
    "skeleton",
    "bvh",
    "motion",
    "representation",
    "diffusion",
    "denoiser",
    "losses",
    "config",
    "errors",
    "captions",
    "encoders",
]


def imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("module", CORE)
def test_core_modules_do_not_import_the_top_layers(module: str) -> None:
    assert not imports(module) & TOP, imports(module) & TOP
