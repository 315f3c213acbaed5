"""What the Python wrappers accept, in one place.

Every wrapper passes its arguments through these helpers before calling an operator:

- ``k`` must be an integer (Python, numpy or a one-element integer tensor); 2.5, True or "3"
  are refused rather than truncated or parsed.
- Tensors may come as numpy arrays; they are detached (the operators are not
  differentiable); float16/bfloat16 values (AMP activations) are converted to float32, the
  lowest precision the kernels compute in.
- A tensor on a device for which the operator has no kernel gets one sentence naming the
  devices that have one, instead of the dispatcher's list of backends. Devices with a kernel
  (CPU, and any other the library registers) pass through untouched.
"""
import operator
from typing import Any, List, Optional

import torch

_HALF = (torch.float16, torch.bfloat16)

# torch device type -> dispatch key of its kernels (most are the type in capitals)
_DISPATCH_KEYS = {"meta": "Meta", "hip": "HIP", "privateuseone": "PrivateUse1"}
_GENERIC_KEYS = ("CompositeExplicitAutograd", "CompositeImplicitAutograd")
_KNOWN_DEVICES = ("cpu", "cuda", "mps", "xpu", "meta")


def check_k(k: Any, op: str, name: str = "k") -> int:
    """``k`` as a Python int; a ValueError for anything that is not an integer."""
    is_bool = isinstance(k, bool) or str(getattr(k, "dtype", "")) in ("bool", "torch.bool")
    try:
        value = None if is_bool else operator.index(k)
    except TypeError:
        value = None
    if value is None:
        raise ValueError(f"{op}: {name} should be an integer, got {k!r} ({type(k).__name__})")
    return value


def as_tensor(x: Any, op: str, name: str = "x") -> torch.Tensor:
    """``x`` as a detached tensor (numpy arrays are wrapped without a copy); float16/bfloat16
    become float32."""
    if not isinstance(x, torch.Tensor):
        if type(x).__module__ != "numpy" or not hasattr(x, "__array__"):
            raise ValueError(f"{op}: {name} should be a torch.Tensor or a numpy array, got "
                             f"{type(x).__name__}")
        x = torch.as_tensor(x)
    x = x.detach()
    if x.dtype in _HALF:
        x = x.float()
    return x


def _dispatch_key(device: torch.device) -> str:
    return _DISPATCH_KEYS.get(device.type, device.type.upper())


def _has_kernel(qualname: str, key: str) -> bool:
    return any(torch._C._dispatch_has_kernel_for_dispatch_key(qualname, k)
               for k in (key,) + _GENERIC_KEYS)


def supported_devices(op: str) -> List[str]:
    """The device types for which ``torch_geometry::<op>`` has a kernel."""
    qualname = f"torch_geometry::{op}"
    return [d for d in _KNOWN_DEVICES
            if _has_kernel(qualname, _dispatch_key(torch.device(d)))]


def check_device(op: str, *tensors: Optional[torch.Tensor]) -> None:
    """Raises a NotImplementedError in one sentence when a tensor is on a device for which
    ``torch_geometry::<op>`` has no kernel."""
    qualname = f"torch_geometry::{op}"
    for t in tensors:
        if t is None or _has_kernel(qualname, _dispatch_key(t.device)):
            continue
        devices = ", ".join(supported_devices(op))
        raise NotImplementedError(
            f"torch_geometry.{op} does not run on {t.device.type} tensors: this build has "
            f"kernels for {devices} only (move the input there, e.g. with .cpu())")
