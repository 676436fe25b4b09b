"""The README's Python snippets and the examples run as written."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_snippets():
    assert len(SNIPPETS) >= 6


# the training example takes seconds: with the heavy tests
@pytest.mark.parametrize("index", [pytest.param(i, marks=pytest.mark.heavy) if "for epoch" in s
                                   else i for i, s in enumerate(SNIPPETS)])
def test_readme_snippet_runs(index, capsys):
    # a snippet that shows an optional extra (torch, onnx, dask, ...) needs it installed
    for module in re.findall(r"^(?:from|import) (\w+)", SNIPPETS[index], re.M):
        pytest.importorskip(module)
    exec(compile(SNIPPETS[index], f"README.md snippet {index}", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out  # every snippet shows its result


def test_readme_worked_example_prints_the_lecture_values(capsys):
    snippet = next(s for s in SNIPPETS if "np.arange(9.0)" in s)
    exec(snippet, {})
    assert "[[19. 25.]\n [37. 43.]]" in capsys.readouterr().out


@pytest.mark.parametrize("example, epochs, accuracy", [
    ("train_digits.py", 4, 0.9),
    pytest.param("train_resnet.py", 4, 0.95, marks=pytest.mark.heavy),
])
def test_training_example_learns(example, epochs, accuracy):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, str(ROOT / "examples" / example), "--epochs",
                          str(epochs)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    accuracies = [float(a) for a in re.findall(r"test acc (\d\.\d+)", run.stdout)]
    assert len(accuracies) == epochs and accuracies[-1] >= accuracy, run.stdout
