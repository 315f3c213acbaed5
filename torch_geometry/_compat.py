"""Version differences, in one place.

The package runs on Debian's torch 1.13 and on torch 2.x from PyPI; every check of the torch
version or of an API that only some versions have lives here, so that the rest of the package
reads the same on both and the day 1.13 support ends only this file changes.
"""
import re
import sys
import types
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn


def _parse_version(version: str) -> Tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


TORCH_VERSION: Tuple[int, int] = _parse_version(torch.__version__)

# torch.compile, torch.export and fake tensors exist from torch 2.0 on.
TORCH2: bool = TORCH_VERSION >= (2, 0)

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


def fake_registrar() -> Optional[Callable[[str], Callable]]:
    """The decorator that registers a fake (meta) implementation of an operator:
    ``torch.library.register_fake`` (torch >= 2.4), ``torch.library.impl_abstract`` (2.2, 2.3),
    or None where torch has neither (1.13: nothing traces the operators there)."""
    if hasattr(torch.library, "register_fake"):
        return torch.library.register_fake
    if hasattr(torch.library, "impl_abstract"):
        return torch.library.impl_abstract
    return None


def new_dynamic_size() -> "torch.SymInt":
    """A fresh unbacked size for an output whose length depends on the input's values; only
    valid inside a fake implementation. (``new_dynamic_size`` replaced
    ``create_unbacked_symint`` in torch 2.4.)"""
    ctx = torch.library.get_ctx()
    make = getattr(ctx, "new_dynamic_size", None)
    if make is None:
        make = ctx.create_unbacked_symint
    return make()


def original_module(model: nn.Module) -> nn.Module:
    """The module that ``torch.compile`` wrapped, or ``model`` itself when it is not compiled.

    Forward hooks belong on the original modules: the compiled wrapper only holds them under
    ``_orig_mod.``-prefixed names. Without torch._dynamo imported nothing can be compiled,
    so the check does not import it (that import costs seconds).
    """
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is None:
        return model
    compiled = getattr(getattr(dynamo, "eval_frame", None), "OptimizedModule", None)
    if compiled is not None and isinstance(model, compiled):
        return model._orig_mod
    return model
