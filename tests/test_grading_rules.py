"""Fast unit checks of the grading rules and of the sandbox and judge, without nbgrader runs."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from course_grading.judge import Judge, _free_names
from course_grading.preprocessors import HideHiddenTests, determine_grade

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def _test_cell(*outputs) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("check()")
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t", "points": 2, "locked": True,
                                 "schema_version": 3}
    cell.outputs = [nbformat.v4.new_output(**o) for o in outputs]
    return cell


def test_only_an_error_fails_a_test_cell():
    assert determine_grade(_test_cell()) == (2, 2)
    assert determine_grade(_test_cell(dict(output_type="stream", name="stderr", text="UserWarning: ...\n"),
                                      dict(output_type="stream", name="stdout", text="ok\n"))) == (2, 2)
    assert determine_grade(_test_cell(dict(output_type="error", ename="AssertionError", evalue="x",
                                           traceback=[]))) == (0, 2)


def test_feedback_hides_hidden_tests():
    cell = nbformat.v4.new_code_cell("visible()\n\n### BEGIN HIDDEN TESTS\nsecret_reference()\n### END HIDDEN TESTS\n")
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb, _ = HideHiddenTests()(nb, {})  # as nbconvert calls it (an exporter skips disabled preprocessors)
    assert "secret_reference" not in nb.cells[0].source and "visible()" in nb.cells[0].source


def test_free_names_are_the_names_a_cell_reads_but_never_binds():
    tree = __import__("ast").parse("x = f(y)\ndef g(a):\n    return a + z\nimport m\nfor i in it: m.k(i)\n")
    assert _free_names(tree) == {"f", "y", "z", "it"}


def test_judge_encodes_data_only_and_keeps_memory_layout(tmp_path):
    judge = Judge(tmp_path, lambda code, deadline: None)
    tensors: dict = {}
    strided = torch.arange(24.0).view(2, 3, 4).transpose(1, 2)
    node = judge.encode([1, 2.5, math.inf, "s", None, (True,), {"k": strided}, torch.float64], tensors)
    assert node["l"][2] == {"f": "inf"} and node["l"][7] == {"dtype": "float64"}
    key = node["l"][6]["d"][0][1]
    rebuilt = tensors[key["t"]].as_strided(key["size"], key["stride"])
    assert torch.equal(rebuilt, strided) and not rebuilt.is_contiguous()
    with pytest.raises(TypeError):
        judge.encode(lambda: 0, {})
    with pytest.raises(ValueError):
        judge.decode({"pickle": "..."}, {})
    # A pickle goes to the kernel only: the judge never reads one.
    packed = judge.pack([torch.nn.Linear(3, 2)], tensors)
    assert tensors[packed["pk"]].dtype == torch.uint8
    with pytest.raises(ValueError):
        judge.decode(packed, tensors)


@needs_bwrap
def test_sandbox_sees_only_its_scratch_folder(tmp_path):
    from course_grading.sandbox import sandbox_command

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("solutions")
    root = Path(__file__).resolve().parents[1]
    probe = ("import os, pathlib, socket\n"
             f"print(os.path.exists({str(secret)!r}), os.path.exists({str(root / 'solutions')!r}), "
             f"os.path.exists({str(root / 'course_lib' / 'testing.py')!r}))\n"
             "import course_lib.testing\n"
             "try:\n    import course_lib.attention\nexcept ImportError:\n    print('hidden')\n"
             f"try:\n    open({str(root / 'course_lib' / 'testing.py')!r}, 'a')\nexcept OSError:\n    print('read-only')\n"
             "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\nexcept OSError:\n    print('offline')\n"
             "open('out.txt', 'w').write('ok')\n")
    cmd = sandbox_command(scratch, ["course_lib.attention"]) + [sys.executable, "-c", probe]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True", "hidden", "read-only", "offline"]
    assert (scratch / "out.txt").read_text() == "ok"


@needs_bwrap
def test_sandbox_limits_processes_and_its_tmp(tmp_path):
    """A fork bomb stops at the process limit, as root too (the sandbox then runs as a user of its
    own), and /tmp is a small private tmpfs; the student's code has no capabilities."""
    from course_grading.sandbox import sandbox_command

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    probe = ("import os, subprocess\nprocs = []\ntry:\n    for i in range(60):\n"
             "        procs.append(subprocess.Popen(['sleep', '5']))\n"
             "except OSError:\n    print('limited', len(procs) < 20)\n"
             "try:\n    open('/tmp/big', 'wb').write(b'0' * (80 * 2**20))\nexcept OSError:\n    print('tmp full')\n"
             "caps = open('/proc/self/status').read().split('CapEff:')[1].split()[0]\nprint('caps', int(caps, 16))\n"
             "open('out.txt', 'w').write('ok')\nprint('uid is root', os.getuid() == 0)\n")
    cmd = sandbox_command(scratch, processes=20, tmp_mb=64) + [sys.executable, "-c", probe]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["limited True", "tmp full", "caps 0", "uid is root False"], result.stdout
    assert (scratch / "out.txt").read_text() == "ok"


def test_grading_refuses_without_bubblewrap_and_says_why(tmp_path):
    shutil.copy(Path(__file__).resolve().parents[1] / "nbgrader_config.py", tmp_path)
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no bwrap on this PATH
    result = subprocess.run([sys.executable, "-m", "course_grading.parallel_grading", "ch05_attention"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert "refusing to grade" in result.stderr and "apt-get install bubblewrap" in result.stderr
    assert "COURSE_GRADING_NO_SANDBOX=1" in result.stderr


@needs_bwrap
def test_a_cell_that_prints_without_end_keeps_a_bounded_output(tmp_path):
    from course_grading.preprocessors import SandboxedExecute

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("for i in range(20000):\n    print('x' * 500)"),
        nbformat.v4.new_code_cell("print('after')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    executor = SandboxedExecute(timeout=60, max_output_bytes=100_000)
    nb, _ = executor.preprocess(nb, {"nbgrader": {"assignment": "not-judged"}, "metadata": {"path": str(tmp_path)}})
    kept = sum(len(o.get("text", "")) for o in nb.cells[0].outputs)
    assert kept < 110_000 and "output cut" in nb.cells[0].outputs[-1].text
    assert nb.cells[1].outputs[0].text == "after\n"


@needs_bwrap
def test_a_kernel_that_fills_the_disk_is_stopped_and_says_why(tmp_path):
    from course_grading.preprocessors import SandboxedExecute

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('before')"),
        nbformat.v4.new_code_cell("import time\nfor i in range(40):\n"
                                  "    open(f'junk{i}', 'wb').write(b'0' * (10 * 2**20))\n    time.sleep(0.05)"),
        nbformat.v4.new_code_cell("print('after')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    executor = SandboxedExecute(timeout=60, sandbox_disk_mb=50)
    nb, _ = executor.preprocess(nb, {"nbgrader": {"assignment": "not-judged"}, "metadata": {"path": str(tmp_path)}})
    assert nb.cells[0].outputs[0].text == "before\n"
    error = nb.cells[1].outputs[-1]
    assert error.output_type == "error" and "writing more than 50 MiB" in error.evalue
    assert nb.cells[2].outputs[-1].ename == "NotRun"
