"""Kernel launches with a fraction of Triton's host time per launch (imports triton).

``launch(kernel, grid, *args, **meta)`` does what ``kernel[grid](*args, **meta)`` does. Triton's
``JITFunction.run`` binds, specialises and hashes every argument at every launch: about 48 µs of host time for
one of our kernels (31-50 arguments) on a lent H200's host, where the compiled kernel's own launcher takes about
12 µs (docs/benchmark.md). At 512 tokens a training step is bound by the host's launches, so that difference is
step time.

``launch`` remembers the compiled kernel under everything that decides which one Triton picks: the device, the
exact value of every scalar argument (Triton specialises integers on their value), each tensor argument's dtype
and 16-byte alignment, and the constexprs and launch options in ``meta``. The first launch of each such key goes
through Triton, which compiles or loads the kernel as usual and returns it; later launches of the key call it
directly. Triton's own path runs instead wherever the shortcut could differ from it: the interpreter
(``TRITON_INTERPRET=1``), launch hooks (profilers), pre-run hooks, or a Triton whose compiled kernels lack the
launcher this relies on (checked at each kernel's first launch). Triton's global compile options (``knobs``:
debug, instrumentation) count as they stood at a key's first launch.

Arguments come in the order our kernels declare them: tensors first, then scalars (integers and floats), then
constexprs by keyword.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from triton.runtime.jit import JITFunction

try:  # Triton >= 3.4
    from triton import knobs
    from triton.runtime import driver
except ImportError:  # an older Triton: every launch goes through Triton's own path
    knobs = None

# Keys kept per kernel before the table starts afresh (each new shape of a call is a new key).
MAX_KEYS_PER_KERNEL = 1024


@dataclass
class _KernelLaunches:
    """What ``launch`` knows of one kernel: how many leading arguments are tensors (None: use Triton's path), and
    for each key the compiled kernel and the constexpr values that follow the runtime arguments."""

    tensor_count: int | None = None
    compiled: dict = field(default_factory=dict)


_kernels: dict[JITFunction, _KernelLaunches] = {}


def _hooks_active() -> bool:
    runtime = knobs.runtime
    for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook):
        # Triton 3.6+ keeps a (possibly empty) chain of hooks, earlier versions None or a function.
        if hook is not None and getattr(hook, "calls", True):
            return True
    return getattr(runtime, "add_stages_inspection_hook", None) is not None


def _key(device: int, args: tuple, tensor_count: int, meta: dict) -> tuple:
    tensors = args[:tensor_count]
    return (
        device,
        args[tensor_count:],
        tuple([t.dtype for t in tensors]),
        tuple([t.data_ptr() % 16 == 0 for t in tensors]),
        tuple(meta.items()),
    )


def _constexpr_tail(kernel: JITFunction, args: tuple, meta: dict) -> tuple | None:
    """The values of the kernel's parameters after ``args`` (its constexprs, defaults included) in declaration
    order, as Triton's launcher receives them; None where the parameters do not have that shape."""
    params = {name: value for name, value in meta.items() if name in kernel.arg_names}
    try:
        bound = inspect.signature(kernel.fn).bind(*args, **params)
    except TypeError:
        return None
    bound.apply_defaults()
    values = tuple(bound.arguments.values())
    if len(values) != len(kernel.arg_names) or any(
        a is not b for a, b in zip(values[: len(args)], args, strict=True)
    ):
        return None
    return values[len(args) :]


def _first_launch(kernel, launches: _KernelLaunches, key, grid, args, meta) -> None:
    compiled = kernel[grid](*args, **meta)
    tail = _constexpr_tail(kernel, args, meta)
    if tail is None or not all(hasattr(compiled, name) for name in ("run", "function", "packed_metadata")):
        launches.tensor_count = None  # this kernel always goes through Triton's path
        return
    if len(launches.compiled) >= MAX_KEYS_PER_KERNEL:
        launches.compiled.clear()
    launches.compiled[key] = (compiled, tail)


def launch(kernel, grid: tuple[int, ...], *args, **meta) -> None:
    """``kernel[grid](*args, **meta)`` with tensors first in ``args``; see the module docstring."""
    if (
        knobs is None
        or not isinstance(kernel, JITFunction)
        or getattr(kernel, "pre_run_hooks", None)
        or _hooks_active()
    ):
        kernel[grid](*args, **meta)
        return
    launches = _kernels.get(kernel)
    if launches is None:
        count = 0
        while count < len(args) and isinstance(args[count], torch.Tensor):
            count += 1
        scalars_only = not any(isinstance(a, torch.Tensor) for a in args[count:])
        launches = _kernels[kernel] = _KernelLaunches(count if scalars_only else None)
    if launches.tensor_count is None:
        kernel[grid](*args, **meta)
        return
    device = driver.active.get_current_device()
    try:
        key = _key(device, args, launches.tensor_count, meta)
    except AttributeError:  # a call that passes something else where the first call passed a tensor
        kernel[grid](*args, **meta)
        return
    entry = launches.compiled.get(key)
    if entry is None:
        _first_launch(kernel, launches, key, grid, args, meta)
        return
    compiled, tail = entry
    stream = driver.active.get_current_stream(device)
    grid_y = grid[1] if len(grid) > 1 else 1
    grid_z = grid[2] if len(grid) > 2 else 1
    compiled.run(
        grid[0],
        grid_y,
        grid_z,
        stream,
        compiled.function,
        compiled.packed_metadata,
        None,
        None,
        None,
        *args,
        *tail,
    )
