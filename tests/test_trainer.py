"""course_lib.trainer (chapter 7): loss, one step, schedule boundaries, decay groups, clipping, exact resume."""

import math

import pytest
import torch
from torch import nn

import course_lib.trainer as trainer_module
from course_lib.trainer import (
    autocast,
    best_precision,
    cpu_flags,
    Trainer,
    TrainerConfig,
    adamw_with_decay_groups,
    language_model_loss,
    next_token_loss,
    optimization_step,
    warmup_cosine_lr,
)


def test_next_token_loss_is_the_mean_over_all_positions():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    by_hand = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(next_token_loss(logits, targets), by_hand)
    assert next_token_loss(torch.zeros(2, 4, 11), targets[:2, :4]).item() == pytest.approx(math.log(11))
    with pytest.raises(ValueError, match="same leading shape"):
        next_token_loss(logits, targets[:, 1:])
    with pytest.raises(TypeError, match="integer token ids"):
        next_token_loss(logits, targets.float())


def test_optimization_step_clips_before_the_update_and_clears_gradients():
    torch.manual_seed(0)
    model = nn.Embedding(7, 7)
    start = model.weight.detach().clone()
    batch = (torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]]))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss, norm = optimization_step(model, language_model_loss, batch, opt, grad_clip=1e-3)
    assert model.weight.grad is None
    assert loss == pytest.approx(language_model_loss(nn.Embedding.from_pretrained(start), batch).item())
    assert norm > 1e-3  # measured before clipping ...
    assert (model.weight.detach() - start).norm().item() == pytest.approx(1e-3, rel=1e-4)  # ... the update after


def test_schedule_boundaries():
    lr = lambda s: warmup_cosine_lr(s, max_lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)  # noqa: E731
    assert lr(0) == pytest.approx(0.1)
    assert lr(9) == pytest.approx(1.0) and lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)  # half-way through the cosine
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    assert all(lr(s) >= lr(s + 1) for s in range(10, 120))
    assert warmup_cosine_lr(0, 1.0, 0.0, 0, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        warmup_cosine_lr(0, 1.0, 0.0, 20, 10)


class Tiny(nn.Module):
    """Not a GPT: the trainer must not care."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def batch(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 4, generator=g)
    return x, x.sum(dim=1, keepdim=True)


def mse(model, b):
    x, y = b
    return ((model(x) - y) ** 2).mean()


def test_decay_groups():
    opt = adamw_with_decay_groups(Tiny(), lr=1e-3, weight_decay=0.1)
    decayed, plain = opt.param_groups
    assert all(p.dim() == 2 for p in decayed["params"]) and len(decayed["params"]) == 2
    assert all(p.dim() == 1 for p in plain["params"]) and plain["weight_decay"] == 0.0


def test_training_reduces_loss_and_evaluates_on_schedule():
    torch.manual_seed(0)
    cfg = TrainerConfig(max_steps=200, max_lr=1e-2, min_lr=1e-3, warmup_steps=10, eval_interval=50,
                        eval_batches=4, grad_clip=0.5, progress=False)
    trainer = Trainer(Tiny(), mse, batch, cfg, val_batch=lambda i: batch(10_000 + i))
    before = trainer.evaluate()
    history = trainer.fit()
    assert history.val_loss[-1] < 0.3 * before
    assert history.eval_steps == [50, 100, 150, 200]
    assert len(history.grad_norm) == 200 and all(n > 0 for n in history.grad_norm)


def test_bf16_precision_trains_with_float32_weights():
    torch.manual_seed(0)
    cfg = TrainerConfig(max_steps=100, max_lr=1e-2, min_lr=1e-3, warmup_steps=5, eval_interval=50,
                        eval_batches=2, precision="bf16", progress=False)
    trainer = Trainer(Tiny(), mse, batch, cfg, val_batch=lambda i: batch(10_000 + i))
    before = trainer.evaluate()
    trainer.fit()
    assert trainer.history.val_loss[-1] < 0.5 * before
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    with pytest.raises(ValueError, match="precision must be 'fp32', 'bf16' or 'auto', got 'fp16'"):
        optimization_step(Tiny(), mse, batch(0), trainer.optimizer, precision="fp16")


def test_resume_is_exact(tmp_path):
    cfg = TrainerConfig(max_steps=20, warmup_steps=3, eval_interval=5, eval_batches=2, progress=False,
                        checkpoint_path=str(tmp_path / "ckpt.pt"), checkpoint_interval=10)
    torch.manual_seed(0)
    straight = Trainer(Tiny(), mse, batch, cfg, val_batch=batch)
    straight.fit()

    torch.manual_seed(0)
    first = Trainer(Tiny(), mse, batch, cfg, val_batch=batch)
    first.fit(until=10)  # writes the checkpoint at step 10
    torch.manual_seed(123)  # the resumed run must not depend on the random state it starts in
    resumed = Trainer(Tiny(), mse, batch, cfg, val_batch=batch)
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    resumed.fit()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.history.train_loss == straight.history.train_loss
    assert not (tmp_path / "ckpt.pt.tmp").exists()


@pytest.mark.parametrize("flags, expected", [({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16"),
                                             ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),  # AVX512-BF16 without AMX
                                             ({"avx2", "avx512f"}, "fp32"),  # AVX-512 without bfloat16
                                             ({"avx2"}, "fp32"), (set(), "fp32")])  # a laptop; no /proc/cpuinfo
def test_auto_precision_is_bf16_only_with_bfloat16_hardware(monkeypatch, flags, expected):
    monkeypatch.setattr(trainer_module, "cpu_flags", lambda: flags)
    assert best_precision("cpu") == expected
    with autocast(Tiny(), "auto"):
        assert torch.is_autocast_enabled("cpu") == (expected == "bf16")
    trainer = Trainer(Tiny(), mse, batch, TrainerConfig(max_steps=3, precision="auto", progress=False))
    assert all(math.isfinite(loss) for loss in trainer.fit().train_loss)


def test_cpu_flags_reads_this_machine():
    flags = cpu_flags()
    assert isinstance(flags, set) and all(isinstance(f, str) for f in flags)
