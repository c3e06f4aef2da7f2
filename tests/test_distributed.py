"""Data parallelism (course_lib.distributed, DistributedTrainer under torchrun): 2 CPU processes follow 1 process.

As a test module it starts itself under torchrun (2 processes, gloo); started by torchrun with an
output folder as its argument, it is the worker (see ``_worker`` at the end). Both sides build the
same tiny GPT and batches with :func:`new_trainer`, so the only difference is the process count.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from course_lib import distributed
from course_lib.gpt import GPT, GPTConfig
from course_lib.trainer import Trainer, TrainerConfig, language_model_loss

VOCAB, CONTEXT, GLOBAL_BATCH, STEPS = 16, 16, 8, 20
TINY = GPTConfig(vocab_size=VOCAB, context_length=CONTEXT, d_model=32, n_layers=2, n_heads=2, dropout=0.0)
# name -> (parameter dtype, Trainer precision). No dropout: its random masks would differ by process count.
RUNS = {"float64": (torch.float64, "fp32"), "float32": (torch.float32, "fp32"), "bf16": (torch.float32, "bf16")}

# How far the 2-process run may be from the 1-process run. The arithmetic is the same, but not the
# order of the additions: one process sums each weight's gradient over 8 rows in one matrix
# product; two processes sum 4 rows each and the all-reduce adds the two halves. So results differ
# by rounding in the last bit (float32: ~1e-7 relative, float64: ~1e-16), and bf16 autocast rounds
# the inputs of matrix products to 8 significant bits. 20 AdamW steps carry these differences
# forward. Measured on a 2-core CPU, largest difference of the logged train loss, val loss and
# gradient norm: float64 4.4e-16, float32 4.8e-7 (2.4e-7 with 2 threads in the 1-process run),
# bf16 7.8e-3 (a gradient norm). The bounds leave headroom: other thread counts or CPUs change the
# summation order again. Float64 shows that nothing but rounding separates the two runs.
LOG_TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "bf16": 5e-2}
# The weights agree less tightly than the losses: Adam divides each gradient by its own running
# size, so for a weight whose gradient is nearly zero, a rounding difference can change its update
# by a good fraction of the learning rate (1e-2). Measured: float64 1.7e-13, float32 7e-5.
WEIGHT_TOLERANCE = {"float64": 1e-10, "float32": 1e-3}
TORCHRUN_TIMEOUT_S = 240
ROOT = Path(__file__).resolve().parents[1]


def sequences(seed: int, batch: int = GLOBAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch for ``seed``: each row runs x -> (5x + 3) mod 16 from a random start, easy to learn."""
    start = torch.randint(VOCAB, (batch,), generator=torch.Generator().manual_seed(seed))
    tokens = [start]
    for _ in range(CONTEXT):
        tokens.append((5 * tokens[-1] + 3) % VOCAB)
    rows = torch.stack(tokens, dim=1)  # (B, T + 1)
    return rows[:, :-1], rows[:, 1:]


def new_trainer(run: str, checkpoint: Path | None = None, progress: bool = False,
                loss_fn=language_model_loss) -> distributed.DistributedTrainer:
    dtype, precision = RUNS[run]
    torch.manual_seed(0)  # the same initial weights in every process (DDP would copy rank 0's anyway)
    config = TrainerConfig(max_steps=STEPS, max_lr=1e-2, min_lr=1e-3, warmup_steps=3, precision=precision,
                           eval_interval=10, eval_batches=2, progress=progress,
                           checkpoint_path=None if checkpoint is None else str(checkpoint), checkpoint_interval=STEPS)
    return distributed.DistributedTrainer(GPT(TINY).to(dtype), loss_fn, sequences, config,
                   val_batch=lambda i: sequences(1_000_000 + i))


# ---------------------------------------------------------------------------------------------
# In one process: the sharding contract and setup() without torchrun
# ---------------------------------------------------------------------------------------------


def test_shard_cuts_contiguous_equal_chunks_of_every_tensor():
    x, y = torch.arange(8).reshape(4, 2), torch.arange(4)
    first, second = distributed.shard((x, y), 0, 2), distributed.shard((x, y), 1, 2)
    assert torch.equal(first[0], x[:2]) and torch.equal(second[1], y[2:])
    assert torch.equal(torch.cat([first[0], second[0]]), x)  # together: exactly the global batch
    nested = distributed.shard({"ids": x, "mask": [y], "name": "batch", "scale": torch.tensor(2.0)}, 1, 2)
    assert torch.equal(nested["ids"], x[2:]) and torch.equal(nested["mask"][0], y[2:])
    assert nested["name"] == "batch" and nested["scale"].item() == 2.0  # no rows: passed on
    assert torch.equal(distributed.shard(x, 0, 1), x)
    with pytest.raises(ValueError, match="4 rows does not split evenly across 3 processes"):
        distributed.shard(x, 0, 3)
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        distributed.shard(x, 2, 2)


def test_setup_without_torchrun_is_one_process(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup()
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True)
    assert not torch.distributed.is_initialized() and distributed.is_main_process()
    assert distributed.mean_across_processes(0.25) == 0.25
    trainer = new_trainer("float32")
    assert trainer.train_model is trainer.model and trainer.is_main  # not wrapped: one process is plain training
    trainer.fit()
    torch.manual_seed(0)
    plain = Trainer(GPT(TINY), language_model_loss, sequences, trainer.config,
                    val_batch=lambda i: sequences(1_000_000 + i))
    plain.fit()
    assert plain.history == trainer.history  # the same numbers as chapter 7's Trainer, bit for bit


def test_setup_names_missing_torchrun_variables(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT are missing"):
        distributed.setup()
    assert not torch.distributed.is_initialized()


# ---------------------------------------------------------------------------------------------
# Under torchrun: two processes against one
# ---------------------------------------------------------------------------------------------


def torchrun(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m torch.distributed.run --standalone ARGS`` (a free port); fails loudly with its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", *args]
    env = {k: v for k, v in os.environ.items() if k not in distributed.TORCHRUN_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small CPU: one thread each
    start = time.perf_counter()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S,
                                env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish within {TORCHRUN_TIMEOUT_S} s: {' '.join(cmd)}\n"
                    f"--- stdout ---\n{err.stdout}\n--- stderr ---\n{err.stderr}")
    assert result.returncode == 0, (
        f"torchrun failed with exit status {result.returncode}: {' '.join(cmd)}\n"
        f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr (the workers' tracebacks) ---\n{result.stderr[-10000:]}")
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, list[dict], str]:
    """Run the worker under torchrun; return its output folder, each rank's report, and the console."""
    out = tmp_path_factory.mktemp("ddp")
    # --tee 3: each worker's output is also shown, prefixed with its rank ("[default1]:").
    result, seconds = torchrun(["--nproc_per_node=2", "--log-dir", str(out / "logs"), "--tee", "3",
                                __file__, str(out)])
    print(f"torchrun, 2 processes: {seconds:.1f} s")
    reports = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return out, reports, result.stdout + result.stderr


@pytest.fixture(scope="module")
def one_process() -> dict[str, distributed.DistributedTrainer]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each worker; on a busy 2-core machine 2 threads made this 10x slower
    try:
        trainers = {run: new_trainer(run) for run in RUNS}
        for trainer in trainers.values():
            trainer.fit()
    finally:
        torch.set_num_threads(threads)
    return trainers


def test_torchrun_starts_two_gloo_processes_with_ddp(two_processes):
    _, reports, console = two_processes
    for rank, report in enumerate(reports):
        assert (report["rank"], report["world_size"], report["backend"], report["device"]) == (rank, 2, "gloo", "cpu")
        assert report["wrapped"] == "DistributedDataParallel" and report["model"] == "GPT"
    bars = {rank: re.findall(rf"^\[default{rank}\]:.*training", console, flags=re.M) for rank in (0, 1)}
    assert bars[0] and not bars[1], "the progress bar must show on rank 0 only"


def test_each_process_trains_on_its_half_of_the_global_batch(two_processes):
    _, (rank0, rank1), _ = two_processes
    starts = sequences(0)[0][:, 0].tolist()  # the first token of each row of step 0's global batch
    assert rank0["step0_rows"] == starts[:4] and rank1["step0_rows"] == starts[4:]


def test_every_process_logs_the_same_averaged_numbers(two_processes):
    _, (rank0, rank1), _ = two_processes
    for run in RUNS:  # losses are all-reduced; the gradient norms are of identical averaged gradients
        assert rank0[run] == rank1[run], f"{run}: the two processes logged different histories"


@pytest.mark.parametrize("run", list(RUNS))
def test_two_processes_follow_the_one_process_trajectory(two_processes, one_process, run):
    _, (rank0, _), _ = two_processes
    single = asdict(one_process[run].history)
    assert rank0[run]["steps"] == single["steps"] and rank0[run]["eval_steps"] == single["eval_steps"] == [10, 20]
    assert single["train_loss"][-1] < single["train_loss"][0] - 1.0  # it learns: the trajectory means something
    for key in ("train_loss", "val_loss", "grad_norm"):
        diff = max(abs(a - b) for a, b in zip(rank0[run][key], single[key], strict=True))
        print(f"{run:>8} {key:<10} max |2 processes - 1 process| = {diff:.1e}")
        assert diff <= LOG_TOLERANCE[run], f"{run} {key}: the runs differ by {diff:.2e}"


def test_checkpoint_is_written_by_rank_0_and_loads_into_a_plain_model(two_processes, one_process):
    out, _, _ = two_processes
    assert (out / "saved_by_rank0.pt").is_file() and not (out / "saved_by_rank1.pt").exists()
    assert not list(out.glob("*.tmp"))
    for run in WEIGHT_TOLERANCE:
        state = torch.load(out / f"{run}.pt", map_location="cpu", weights_only=False)
        assert state["step"] == STEPS
        plain = GPT(TINY).to(RUNS[run][0])
        plain.load_state_dict(state["model"])  # strict: the usual names, no "module." prefix
        reference = one_process[run].model.state_dict()
        for name, value in plain.state_dict().items():
            torch.testing.assert_close(value, reference[name], rtol=0, atol=WEIGHT_TOLERANCE[run])


def test_the_shakespeare_script_trains_under_torchrun(tmp_path):
    checkpoint = tmp_path / "shakespeare.pt"
    result, _ = torchrun(["--nproc_per_node=2", "scripts/train_ddp.py", "--steps", "4", "--eval-interval", "2",
                          "--batch-size", "4", "--context", "16", "--layers", "1", "--heads", "2", "--width", "32",
                          "--sample", "20", "--checkpoint", str(checkpoint)])
    assert "2 process(es), backend gloo, device cpu" in result.stdout
    assert "2 sequences per process" in result.stdout and "4 steps in" in result.stdout
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["step"] == 4 and len(state["history"]["val_loss"]) == 2
    vocab = state["model"]["transformer.wte.weight"].shape[0]
    plain = GPT(GPTConfig(vocab_size=vocab, context_length=16, d_model=32, n_layers=1, n_heads=2))
    plain.load_state_dict(state["model"])  # strict: a plain model's parameter names


# ---------------------------------------------------------------------------------------------
# The worker, run by torchrun
# ---------------------------------------------------------------------------------------------


def _worker(out: Path) -> None:
    ctx = distributed.setup()
    try:
        report: dict = {"rank": ctx.rank, "world_size": ctx.world_size, "backend": ctx.backend,
                        "device": str(ctx.device)}
        rows: list[list[int]] = []

        def recording_loss(model, batch):  # notes which rows of step 0 this process trained on
            if not rows:
                rows.append(batch[0][:, 0].tolist())
            return language_model_loss(model, batch)

        for run in RUNS:
            trainer = new_trainer(run, checkpoint=out / f"{run}.pt", progress=run == "float32",
                                  loss_fn=recording_loss if run == "float32" else language_model_loss)
            report["wrapped"] = type(trainer.train_model).__name__
            report["model"] = type(trainer.model).__name__
            trainer.fit()
            report[run] = asdict(trainer.history)
        report["step0_rows"] = rows[0]
        trainer.save_checkpoint(out / f"saved_by_rank{ctx.rank}.pt")  # only rank 0 may write
        (out / f"rank{ctx.rank}.json").write_text(json.dumps(report))
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
