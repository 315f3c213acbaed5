"""Version differences, in one place.

The package runs on Debian's torch 1.13 and on torch 2.x from PyPI; every check of the torch
version or of an API that only some versions have lives here.
"""
import re
import sys
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn


def _parse_version(version: str) -> Tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


TORCH_VERSION: Tuple[int, int] = _parse_version(torch.__version__)

# torch.compile, torch.export and fake tensors exist from torch 2.0 on.
TORCH2: bool = TORCH_VERSION >= (2, 0)


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
