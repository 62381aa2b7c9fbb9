"""The page's JavaScript parses: every ES module of gateway/static/ goes through ``node --check`` (no build step,
so nothing else would catch a syntax error before a browser does). CI installs Node.js (.ci/run)."""

import shutil
import subprocess
from pathlib import Path

import pytest
from gateway_helpers import REPO

MODULES = sorted((Path(REPO) / "gateway" / "static").glob("*.js"))
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (CI installs it)")
@pytest.mark.parametrize("module", MODULES, ids=[module.name for module in MODULES])
def test_the_module_parses(module):
    # As a module read from standard input: given a file name, node guesses CommonJS and passes some broken modules.
    checked = subprocess.run(
        [NODE, "--input-type=module", "--check"], input=module.read_text(), capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, f"{module.name}: {checked.stderr}"


def test_the_page_has_modules():
    assert "main.js" in {module.name for module in MODULES}
