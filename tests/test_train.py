"""course_lib.train: the schedule, determinism, history, callbacks and errors."""

import math

import pytest
import torch
from torch import nn

from course_lib.train import lr_at, lr_lambda, make_optimizer, train


def _regression_task(seed=0):
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(4, 1, generator=g)

    def batches(step):
        x = torch.randn(16, 4, generator=g)
        return x, x @ w_true

    def loss_fn(model, batch):
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    return batches, loss_fn


def test_schedule_warmup_then_cosine():
    lr, total, warm = 1.0, 110, 10
    assert lr_at(0, lr, total, warm) == pytest.approx(0.1)
    assert lr_at(9, lr, total, warm) == pytest.approx(1.0)
    assert lr_at(10, lr, total, warm) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(total - 1, lr, total, warm, min_lr_ratio=0.1) == pytest.approx(0.1)  # ends at min_lr
    mid = 10 + (total - 1 - 10) / 2
    assert lr_at(int(mid), lr, total, warm, min_lr_ratio=0.0) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / (total - 11))))
    assert lr_at(50, lr, total, warm, schedule="constant") == 1.0
    values = [lr_at(s, lr, total, warm) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # non-increasing after warmup


def test_lambda_lr_factory_drives_torch_scheduler():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(20, 5))
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, 0.5, 20, 5) for s in range(20)])


def test_schedule_errors():
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_at(0, 1.0, 10, schedule="linear")
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_lambda(10, 20)


def test_training_reduces_loss_and_records_history():
    batches, loss_fn = _regression_task()
    model = nn.Linear(4, 1)
    calls = []
    history = train(model, loss_fn, batches, steps=60, lr=0.05, warmup_steps=5, seed=0, progress=False,
                    eval_fn=lambda m: loss_fn(m, batches(0)), eval_every=20,
                    callback=lambda step, m, loss: calls.append(step), callback_every=25)
    assert len(history["train_loss"]) == len(history["lr"]) == 60
    assert history["train_loss"][-1] < 0.1 * history["train_loss"][0]
    assert [s for s, _ in history["val_loss"]] == [20, 40, 60]
    assert calls == [25, 50, 60]
    assert history["lr"][0] == pytest.approx(0.01)
    assert model.training  # left in train mode after the eval calls


def test_same_seed_same_result():
    runs = []
    for _ in range(2):
        batches, loss_fn = _regression_task()
        torch.manual_seed(123)  # a different global state before each run
        model_seed = torch.Generator().manual_seed(1)
        model = nn.Linear(4, 1)
        with torch.no_grad():
            model.weight.copy_(torch.randn(1, 4, generator=model_seed))
        runs.append(train(model, loss_fn, batches, steps=10, seed=7, progress=False)["train_loss"])
    assert runs[0] == runs[1]


def test_iterables_are_restarted_and_iterators_must_not_run_out():
    x = torch.randn(8, 4)
    data = [(x, x.sum(1, keepdim=True))] * 3
    loss_fn = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])  # noqa: E731
    history = train(nn.Linear(4, 1), loss_fn, data, steps=7, progress=False)
    assert len(history["train_loss"]) == 7
    with pytest.raises(ValueError, match="ran out after 3 steps"):
        train(nn.Linear(4, 1), loss_fn, iter(data), steps=7, progress=False)


def test_eval_dict_and_weight_decay_groups():
    batches, loss_fn = _regression_task()
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    opt = make_optimizer(model, 1e-3, weight_decay=0.1)
    decayed, plain = opt.param_groups
    assert {p.dim() for p in decayed["params"]} == {2} and {p.dim() for p in plain["params"]} == {1}
    assert plain["weight_decay"] == 0.0
    h = train(model, loss_fn, batches, steps=4, progress=False, eval_fn=lambda m: {"loss": 1.0, "acc": 0.5})
    assert h["val_acc"] == [(4, 0.5)] and h["val_loss"] == [(4, 1.0)]


def test_bad_arguments():
    batches, loss_fn = _regression_task()
    model = nn.Linear(4, 1)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train(model, loss_fn, batches, steps=0)
    with pytest.raises(ValueError, match="grad_clip must be > 0"):
        train(model, loss_fn, batches, steps=1, grad_clip=0)
    with pytest.raises(TypeError, match="loss_fn must return a scalar tensor"):
        train(model, lambda m, b: m(b[0]), batches, steps=1, progress=False)
    with pytest.raises(TypeError, match="batches must be"):
        train(model, loss_fn, 3, steps=1, progress=False)
    with pytest.raises(FloatingPointError, match="at step 0"):
        train(model, lambda m, b: m(b[0]).sum() * float("nan"), batches, steps=1, progress=False)


def test_ema_update_moves_towards_the_weights():
    from course_lib.train import ema_update

    ema = [torch.zeros(3), torch.full((2, 2), 4.0)]
    params = [torch.ones(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True)]
    ema_update(ema, params, decay=0.9)
    assert torch.allclose(ema[0], torch.full((3,), 0.1))  # 0.9 · 0 + 0.1 · 1
    assert torch.allclose(ema[1], torch.full((2, 2), 3.6))  # 0.9 · 4 + 0.1 · 0
    ema_update(ema, params, decay=0.0)  # decay 0: a copy of the weights
    assert torch.equal(ema[0], params[0].detach())
    with pytest.raises(ValueError, match="decay must be in"):
        ema_update(ema, params, decay=1.5)
    with pytest.raises(ValueError, match="EMA tensors for"):
        ema_update(ema[:1], params, decay=0.5)


def test_cpu_threads_apply_while_training_only(monkeypatch):
    batches, loss_fn = _regression_task()
    previous = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(2)
        train(nn.Linear(4, 1), loss_fn, batches, steps=3, progress=False, cpu_threads=1,
              callback=lambda step, m, loss: seen.append(torch.get_num_threads()), callback_every=1)
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
        from course_lib import device

        monkeypatch.setattr(device, "idle_cores", lambda interval=0.2: 0.0)  # a busy machine
        monkeypatch.setattr(device, "passive_wait", lambda: False)  # with spinning OpenMP threads
        seen.clear()
        train(nn.Linear(4, 1), loss_fn, batches, steps=2, progress=False,  # cpu_threads="auto", the default
              callback=lambda step, m, loss: seen.append(torch.get_num_threads()), callback_every=1)
        assert seen == [1, 1] and torch.get_num_threads() == 2
        seen.clear()
        train(nn.Linear(4, 1), loss_fn, batches, steps=2, progress=False, cpu_threads=None,
              callback=lambda step, m, loss: seen.append(torch.get_num_threads()), callback_every=1)
        assert seen == [2, 2]  # None: left alone
    finally:
        torch.set_num_threads(previous)


def _step_batches(batch_size=32, k=1):
    """Micro-batch ``i`` of a run with ``k`` micro-batches per step: rows of step i // k's batch."""
    w_true = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def batches(i):
        step, j = divmod(i, k)
        x = torch.randn(batch_size, 4, generator=torch.Generator().manual_seed(step))  # the step's whole batch
        rows = slice(j * batch_size // k, (j + 1) * batch_size // k)
        return x[rows], (x @ w_true)[rows]

    return batches


def _mse(model, batch):
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def _linear(seed=1):
    model = nn.Linear(4, 1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 4, generator=g))
        model.bias.copy_(torch.randn(1, generator=g))
    return model


def test_gradient_accumulation_equals_one_big_batch():
    whole, accumulated = _linear(), _linear()
    h1 = train(whole, _mse, _step_batches(k=1), steps=8, lr=0.05, progress=False)
    h4 = train(accumulated, _mse, _step_batches(k=4), steps=8, lr=0.05, grad_accum_steps=4, progress=False)
    assert h4["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
    torch.testing.assert_close(accumulated.weight, whole.weight, atol=1e-6, rtol=1e-5)
    # and not the same as taking a step per micro-batch of 8
    small = _linear()
    train(small, _mse, _step_batches(k=4), steps=8, lr=0.05, progress=False)
    assert not torch.allclose(small.weight, whole.weight, atol=1e-3)


def test_resuming_at_start_step_matches_an_uninterrupted_run():
    import copy

    full = _linear()
    saved = {}

    def snapshot(step, model, loss):  # what a checkpoint keeps: weights, optimiser state, step
        if step == 3:
            saved.update(model=copy.deepcopy(model), opt=copy.deepcopy(opt.state_dict()), step=step)

    opt = make_optimizer(full, 0.05)
    h_full = train(full, _mse, _step_batches(), steps=7, lr=0.05, warmup_steps=2, optimizer=opt,
                   callback=snapshot, callback_every=1, progress=False)
    resumed = saved["model"]
    opt2 = make_optimizer(resumed, 0.05)
    opt2.load_state_dict(saved["opt"])
    h_rest = train(resumed, _mse, _step_batches(), steps=7, lr=0.05, warmup_steps=2, optimizer=opt2,
                   start_step=saved["step"], progress=False)
    assert h_rest["train_loss"] == pytest.approx(h_full["train_loss"][3:], rel=1e-6)
    assert h_rest["lr"] == pytest.approx(h_full["lr"][3:])
    torch.testing.assert_close(resumed.weight, full.weight, atol=0, rtol=0)


def _ddp_trains_like_the_plain_model(folder: str) -> None:
    """One gloo process group of size 1: DDP + gradient accumulation gives the plain model's weights."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    plain, wrapped = _linear(), _linear()
    train(plain, _mse, _step_batches(k=2), steps=5, lr=0.05, grad_accum_steps=2, progress=False)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(wrapped)
        h = train(ddp, _mse, _step_batches(k=2), steps=5, lr=0.05, grad_accum_steps=2, progress=False)
    finally:
        dist.destroy_process_group()
    assert len(h["train_loss"]) == 5
    torch.testing.assert_close(wrapped.weight, plain.weight, atol=1e-6, rtol=1e-5)


def test_distributed_data_parallel_model_trains_like_the_plain_model(tmp_path):
    # In a fresh process, as torchrun would start it: once, inside the long pytest process of
    # `make test`, the in-process gloo group hung (cause not found; alone it passes in seconds).
    # With a timeout a hang fails this test instead of stalling the whole run.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_accumulation_and_resume_arguments_are_checked():
    model = nn.Linear(4, 1)
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1"):
        train(model, _mse, _step_batches(), steps=2, grad_accum_steps=0)
    with pytest.raises(ValueError, match=r"start_step must be in \[0, 1\]"):
        train(model, _mse, _step_batches(), steps=2, start_step=2)
    with pytest.raises(ValueError, match="ema_decay"):
        train(model, _mse, _step_batches(), steps=2, start_step=1, ema_decay=0.9)


if __name__ == "__main__":  # the child process of the DDP test above
    import sys

    _ddp_trains_like_the_plain_model(sys.argv[1])
