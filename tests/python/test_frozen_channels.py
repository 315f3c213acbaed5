"""Frozen means frozen: channel-mode early stopping keeps frozen channels at their values
whatever moves the model's tensors (dtype round trips, memory format, a state dict loaded
into the model), with and without ``optimizer=``, beside learning-rate schedulers, through
``torch.save(model)`` and ``remove()``."""
import copy
import io

import pytest
import torch
import torch.nn as nn

from torch_geometry import _compat
from torch_geometry.callbacks import NNKEarlyStopping


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def probe(n=60):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    return torch.randn(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float(), y


def train_steps(model, opt, x, y, steps=3):
    model.train()
    for s in range(steps):
        xb = x[s * 20:(s + 1) * 20].to(next(model.parameters()).dtype)
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), y[s * 20:(s + 1) * 20]).backward()
        opt.step()


# Channels 0 and 1 never improve after the first check: frozen at epoch 1 (patience 1).
SCORES = [[0.5, 0.5, 0.5, 0.5]] + [[0.5, 0.5, 0.4 - 0.01 * e, 0.4 - 0.01 * e] for e in range(50)]


def frozen_run(with_optimizer=True, opt_cls=torch.optim.SGD):
    torch.manual_seed(0)
    model = Net()
    x, y = probe()
    opt = opt_cls(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1) \
        if opt_cls is torch.optim.SGD else opt_cls(model.parameters(), lr=0.05, weight_decay=0.1)
    es = NNKEarlyStopping(model, "relu", (x, y), patience=1, k=5, verbose=False,
                          optimizer=opt if with_optimizer else None)
    scores = iter(SCORES)
    es._score = lambda acts: next(scores)
    for epoch in range(2):
        train_steps(model, opt, x, y)
        es.step(epoch)
    assert es.frozen_channels == [0, 1]
    frozen = (model.conv.weight[:2].detach().clone(), model.conv.bias[:2].detach().clone())
    return model, opt, es, frozen, x, y


def assert_frozen(model, frozen):
    w, b = frozen
    assert torch.equal(model.conv.weight[:2].detach(), w.to(model.conv.weight.dtype))
    assert torch.equal(model.conv.bias[:2].detach(), b.to(model.conv.bias.dtype))


def assert_trained(model, before):
    assert not torch.equal(model.conv.weight[2:].detach().float(), before[2:].float())


MOVES = {
    "double then float": lambda m: m.double().float(),
    "double": lambda m: m.double(),
    "channels_last": lambda m: m.to(memory_format=torch.channels_last),
    "to(cpu, float64) and back": lambda m: m.to("cpu", torch.float64).to(torch.float32),
    "load_state_dict into the model": lambda m: m.load_state_dict(
        {k: v + 1.0 for k, v in m.state_dict().items()}),
}


@pytest.mark.parametrize("move", list(MOVES))
@pytest.mark.parametrize("with_optimizer", [True, False])
def test_frozen_channels_stay_frozen_after_the_model_is_moved(move, with_optimizer):
    model, opt, es, frozen, x, y = frozen_run(with_optimizer)
    MOVES[move](model)
    before = model.conv.weight.detach().clone()
    for epoch in range(2, 4):
        train_steps(model, opt, x, y)
        if with_optimizer:
            assert_frozen(model, frozen)    # right after each optimiser step
        es.step(epoch)
        assert_frozen(model, frozen)
    assert_trained(model, before)
    if not with_optimizer:
        # Without optimizer= the forward pass of the conv re-imposes them.
        train_steps(model, opt, x, y, steps=1)
        model(x[:2].to(model.conv.weight.dtype))
        assert_frozen(model, frozen)


def test_a_reparametrised_conv_is_refused_rather_than_silently_trained():
    model, opt, es, frozen, x, y = frozen_run()
    torch.nn.utils.weight_norm(model.conv)
    with pytest.raises(RuntimeError, match=r"conv\.weight is computed from other parameters"):
        es.step(2)
    model, opt, es, frozen, x, y = frozen_run()

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    torch.nn.utils.parametrize.register_parametrization(model.conv, "weight", Double())
    with pytest.raises(RuntimeError, match="computed from other parameters"):
        es.enforce()


@pytest.mark.parametrize("scheduler_first", [False, True])
def test_a_step_lr_created_before_or_after_the_callback_works(scheduler_first, recwarn):
    torch.manual_seed(0)
    model = Net()
    x, y = probe()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if scheduler_first:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    es = NNKEarlyStopping(model, "relu", (x, y), patience=1, k=5, verbose=False, optimizer=opt)
    if not scheduler_first:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scores = iter(SCORES)
    es._score = lambda acts: next(scores)
    frozen = None
    for epoch in range(4):
        train_steps(model, opt, x, y)
        sched.step()
        es.step(epoch)
        if epoch == 1:
            frozen = (model.conv.weight[:2].detach().clone(), model.conv.bias[:2].detach().clone())
        if frozen is not None:
            assert_frozen(model, frozen)
    assert sched.get_last_lr() == [pytest.approx(0.1 * 0.5 ** 4)]
    # The scheduler saw the optimiser's steps (no "scheduler before optimizer" warning).
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


def test_torch_save_and_deepcopy_of_the_model_work_and_carry_no_callback():
    model, opt, es, frozen, x, y = frozen_run()
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)  # a whole model (torch >= 2.6 defaults to True)
    copied = copy.deepcopy(model)
    for other in (loaded, copied):
        with torch.no_grad():
            other.conv.weight.add_(1.0)
        other(x[:2])                        # its hook is inert: no error, no enforcing
        assert not torch.equal(other.conv.weight[:2], frozen[0])
    assert_frozen(model, frozen)            # the original is untouched by the copies


def test_remove_puts_back_the_optimizer_step_and_unfreezes():
    model, opt, es, frozen, x, y = frozen_run()
    es.remove()
    assert "step" not in vars(opt), "the optimizer's own step should be back"
    assert opt.step.__func__ is type(opt).step
    train_steps(model, opt, x, y)
    model(x[:2])
    assert not torch.equal(model.conv.weight[:2].detach(), frozen[0])


def test_remove_after_a_scheduler_wrapped_the_step_keeps_the_scheduler_working():
    model, opt, es, frozen, x, y = frozen_run()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    es.remove()
    train_steps(model, opt, x, y)
    sched.step()
    assert sched.get_last_lr() == [pytest.approx(0.05)]
    assert not torch.equal(model.conv.weight[:2].detach(), frozen[0])


def test_compat_step_post_hook_runs_after_every_step_and_is_removable():
    p = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=1.0)
    seen = []

    class Record:
        def __call__(self, optimizer, args, kwargs):
            seen.append(p.detach().clone())

    handle = _compat.register_step_post_hook(opt, Record())
    p.grad = torch.ones(2)
    opt.step()
    assert len(seen) == 1 and torch.equal(seen[0], torch.zeros(2))   # after the update
    handle.remove()
    opt.step()
    assert len(seen) == 1
