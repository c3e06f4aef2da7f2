"""The judge and the kernel's half of the bridge, with a real second process as the student's kernel.

What a test passes to the student's code must behave as it would in one process: a model and its
optimizer changed in place, parameters from ``model.parameters()`` (a generator) updated and their
gradients cleared, the grader's own stand-in functions and hidden layers called back. What comes
back is data only.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from course_grading.judge import Judge, RemoteError
from course_grading.sandbox import _without

# A stand-in for the student's kernel: runs each chunk of code it is sent in its own __main__.
KERNEL = textwrap.dedent("""
    import struct, sys, traceback
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    namespace = sys.modules["__main__"].__dict__
    while True:
        header = stdin.read(8)
        if not header:
            break
        code = stdin.read(struct.unpack("!Q", header)[0]).decode()
        try:
            exec(compile(code, "<cell>", "exec"), namespace)
            stdout.write(b"ok\\n")
        except BaseException:
            traceback.print_exc()
            stdout.write(b"error\\n")
        stdout.flush()
""")

STUDENT = textwrap.dedent("""
    import torch
    import torch.nn.functional as F

    def sgd_step(params, lr):
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p -= lr * p.grad
                    p.grad = None

    def train_step(model, optimizer, x, y):
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    def twice_plus_one(f, x):
        return 2 * f(x) + 1

    def count_and_run(layer, x):
        return sum(p.numel() for p in layer.parameters() if p.requires_grad), layer(x)

    def freeze_first(model):
        model[0].weight.requires_grad_(False)
        model.eval()

    def draw(generator):
        return torch.rand(3, generator=generator)

    def clear_by_detach(params):  # an older PyTorch idiom: in-place on the gradient itself
        import types
        assert isinstance(params, types.GeneratorType)
        for p in params:
            p.grad.detach_()
            p.grad.zero_()

    class ShapeError(ValueError):
        pass

    def picky(x):
        raise ShapeError("shapes differ")

    def typed_results():
        import collections, numpy
        Pair = collections.namedtuple("Pair", "loss grad")
        return numpy.float64(0.5), Pair(1, 2)
""")


@pytest.fixture
def judge(tmp_path):
    kernel = subprocess.Popen([sys.executable, "-c", KERNEL], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              cwd=tmp_path)

    def execute(code: str, deadline: float) -> None:
        data = code.encode()
        kernel.stdin.write(struct.pack("!Q", len(data)) + data)
        kernel.stdin.flush()
        assert kernel.stdout.readline() == b"ok\n"

    execute(STUDENT, math.inf)
    judge = Judge(tmp_path, execute, alive=lambda: kernel.poll() is None,
                  hidden_modules=["course_lib.gpt:LayerNorm"])
    judge.run_cell("pass", math.inf)  # starts the bridge
    yield judge
    judge.close()
    kernel.kill()


def _student(judge, name):
    outputs = judge.run_cell(f"_got = {name}", math.inf)
    assert not outputs, outputs
    return judge.namespace["_got"]


def test_parameters_from_a_generator_are_updated_and_cleared(judge):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    model(torch.randn(4, 3)).pow(2).sum().backward()
    expected = [(p - 0.1 * p.grad).detach() for p in model.parameters()]
    _student(judge, "sgd_step")(model.parameters(), 0.1)
    for p, e in zip(model.parameters(), expected):
        assert torch.equal(p.detach(), e) and p.grad is None and p.is_leaf and p.requires_grad


def test_a_model_and_its_optimizer_change_as_in_one_process(judge):
    torch.manual_seed(1)
    mine, ref = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)), nn.Sequential(
        nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    ref.load_state_dict(mine.state_dict())
    opt_mine = torch.optim.AdamW(mine.parameters(), lr=0.01)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    train_step = _student(judge, "train_step")
    for _ in range(3):  # the optimizer's moments must survive between calls
        got = train_step(mine, opt_mine, x, y)
        loss = nn.functional.mse_loss(ref(x), y)
        loss.backward()
        opt_ref.step()
        opt_ref.zero_grad()
        assert got == pytest.approx(loss.item(), rel=1e-6)
    for p, q in zip(mine.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
    assert opt_mine.state_dict()["state"][0]["exp_avg"].abs().sum() > 0


def test_grader_functions_and_hidden_layers_run_in_the_judge(judge):
    calls = []

    def halve(z):
        calls.append(z.shape)
        return z / 2

    x = torch.arange(6.0).view(2, 3)
    torch.testing.assert_close(_student(judge, "twice_plus_one")(halve, x), x + 1)
    assert calls == [(2, 3)]  # it ran here, in the grader's process

    class Secret(nn.Module):  # defined in a function: the kernel cannot import it
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.full((3,), 3.0))

        def forward(self, z):
            return z * self.scale

    count, out = _student(judge, "count_and_run")(Secret(), x)
    assert count == 3
    torch.testing.assert_close(out, 3 * x)


def test_flags_and_generators_come_back(judge):
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    _student(judge, "freeze_first")(model)
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad and not model.training
    generator = torch.Generator().manual_seed(5)
    first = _student(judge, "draw")(generator)
    second = _student(judge, "draw")(generator)  # the generator moved on, as in one process
    replay = torch.Generator().manual_seed(5)
    torch.testing.assert_close(torch.cat([first, second]), torch.rand(6, generator=replay))


def test_an_error_in_a_callback_reaches_the_students_code(judge):
    def broken(z):
        raise ValueError("shapes do not fit")

    with pytest.raises(RemoteError, match="shapes do not fit") as error:
        _student(judge, "twice_plus_one")(broken, torch.ones(2))
    assert isinstance(error.value, ValueError)


def test_hidden_names_are_removed_and_say_why():
    source = "import math\n\nclass Config:\n    pass\n\nclass Layer:\n    pass\n\ndef helper():\n    return 1\n"
    staged = _without(source, "course_lib.m", {"Layer", "helper"})
    namespace: dict = {}
    exec(compile(staged, "m", "exec"), namespace)
    assert "Config" in namespace and "Layer" not in namespace and "helper" not in namespace
    with pytest.raises(ImportError, match="course_lib.m.Layer is not available while your exercise is graded"):
        namespace["__getattr__"]("Layer")
    with pytest.raises(AttributeError):
        namespace["__getattr__"]("other")
    with pytest.raises(ValueError, match="not defined at the top level"):
        _without(source, "course_lib.m", {"Missing"})


def test_backward_through_the_students_result_reaches_both_sides(judge):
    judge.run_cell("pass", math.inf)
    outputs = judge.run_cell("_layer = make_layer()", math.inf)
    assert outputs and outputs[-1]["output_type"] == "error"  # no such function yet: define it in the kernel
    judge._execute("import torch\nclass Scale(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                   "        self.w = torch.nn.Parameter(torch.tensor([2.0, 3.0]))\n"
                   "    def forward(self, x):\n        return x * self.w\n"
                   "def make_layer():\n    return Scale()\n", math.inf)
    layer = _student(judge, "make_layer")()
    x = torch.tensor([1.0, -1.0], requires_grad=True)
    out = layer(x)
    (out * torch.tensor([1.0, 10.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([2.0, 30.0]))  # d/dx through the kernel's graph
    torch.testing.assert_close(layer.w.grad, torch.tensor([1.0, -10.0]))  # the student's own parameter
    with torch.no_grad():
        assert not layer(x).requires_grad


def test_answers_written_another_way_behave_as_in_one_process(judge):
    model = nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    _student(judge, "clear_by_detach")(model.parameters())  # a real generator, tensors of their own
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())
    picky = _student(judge, "picky")
    assert picky.__name__ == "picky"
    with pytest.raises(ValueError, match="shapes differ"):  # a subclass of ValueError is a ValueError
        picky(torch.ones(1))
    number, pair = _student(judge, "typed_results")()
    assert isinstance(number, float) and number == 0.5
    loss, grad = pair
    assert isinstance(pair, tuple) and (loss, grad) == (1, 2)
