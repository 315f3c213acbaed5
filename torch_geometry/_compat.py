"""Differences between the torch versions the package supports (Debian's 1.13 and 2.x).

Every check of the torch version lives here, so that the rest of the package reads the
same on both and the day 1.13 support ends only this file changes.
"""
import types
from typing import Callable, Tuple

import torch


def _version_tuple(version: str) -> Tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


TORCH_VERSION = _version_tuple(torch.__version__)

#: torch >= 2.0: ``Optimizer.register_step_post_hook``.
HAS_STEP_POST_HOOK = hasattr(torch.optim.Optimizer, "register_step_post_hook")


class _HookedStep:
    """The torch < 2 replacement of ``optimizer.step``: the step it replaced, then the hooks
    (by id, in registration order).

    Bound to the optimizer with ``types.MethodType`` (not a closure): learning-rate
    schedulers of torch < 2 re-wrap ``optimizer.step`` through its ``__self__`` and
    ``__func__`` and re-bind ``__func__`` with ``__get__``. ``_with_counter`` (read through
    the bound method) tells a scheduler that the step it wrapped earlier still counts."""

    def __init__(self, previous):
        self.previous = previous
        self.hooks = {}
        self.next_id = 0
        if getattr(previous, "_with_counter", False):
            self._with_counter = True

    def __get__(self, obj, cls=None):
        return self if obj is None else types.MethodType(self, obj)

    def __call__(self, optimizer, *args, **kwargs):
        out = self.previous(*args, **kwargs)
        for hook in list(self.hooks.values()):
            hook(optimizer, args, kwargs)
        return out


class _StepHookHandle:
    """``remove()`` unregisters the hook; the last one removed puts back the step that
    was there before, unless something wrapped ``optimizer.step`` since (then that wrapper
    stays and calls the previous step with no hooks)."""

    def __init__(self, optimizer, hooked: _HookedStep, hook_id: int):
        self._optimizer, self._hooked, self._id = optimizer, hooked, hook_id

    def remove(self):
        opt, hooked = self._optimizer, self._hooked
        if opt is None:
            return
        self._optimizer = self._hooked = None
        hooked.hooks.pop(self._id, None)
        if hooked.hooks:
            return
        current = opt.__dict__.get("step")
        if isinstance(current, types.MethodType) and current.__func__ is hooked:
            previous = hooked.previous
            if isinstance(previous, types.MethodType) and previous.__self__ is opt and \
                    previous.__func__ is type(opt).step:
                del opt.__dict__["step"]      # the class's step again, as before
            else:
                opt.step = previous


def register_step_post_hook(optimizer: torch.optim.Optimizer,
                            hook: Callable[[torch.optim.Optimizer, tuple, dict], None]):
    """Runs ``hook(optimizer, args, kwargs)`` after every ``optimizer.step()``; returns a
    handle with ``remove()``.

    torch >= 2: ``optimizer.register_step_post_hook``. torch < 2 has no step hooks: the
    instance's ``step`` is replaced by a bound method that calls the previous step, then the
    hooks. A scheduler created afterwards wraps it like any step; ``remove()`` of the last
    hook restores the previous step. The hook should be picklable (a small class, not a
    lambda) if the optimizer is to be pickled.
    """
    if HAS_STEP_POST_HOOK:
        return optimizer.register_step_post_hook(hook)
    current = optimizer.__dict__.get("step")
    if isinstance(current, types.MethodType) and isinstance(current.__func__, _HookedStep):
        hooked = current.__func__
    else:
        hooked = _HookedStep(optimizer.step)
        optimizer.step = types.MethodType(hooked, optimizer)
    hook_id = hooked.next_id
    hooked.next_id += 1
    hooked.hooks[hook_id] = hook
    return _StepHookHandle(optimizer, hooked, hook_id)
