"""README.md's Python snippets run verbatim, as a new user would paste them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(_python_blocks())))
def test_readme_python_snippet_runs_verbatim(i, tmp_path):
    pytest.importorskip("skimage", reason="the snippets read scikit-image's sample photo (dev extra)")
    r = subprocess.run([sys.executable, "-c", _python_blocks()[i]], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip(), "the snippet printed nothing"
