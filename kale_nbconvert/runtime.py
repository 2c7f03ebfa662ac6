"""Import alias for tests and benchmarks: the in-step functions as ONE namespace.

The code lives in ``kale_nbconvert/embedded/`` (``step.py``, ``marshal.py``,
``divergence.py``). A generated script defines those functions side by side at module
level, so each finds the others as globals (``_kale_run_step`` calls
``_kale_marshal_save``). Imported module by module they would not, so this module
binds the very same code (same files, same lines) to its own namespace, as the script
does: ``from kale_nbconvert.runtime import _kale_watch_start`` runs what a step runs,
and replacing ``runtime._kale_dirty_ranges`` reaches its callers. Generated scripts
and ``local_runs`` do not use it.
"""

import importlib
import types

from .embedded import IN_STEP, shipped


def _bind_in_step_functions(namespace: dict) -> None:
    modules = [importlib.import_module(f"{__package__}.embedded.{name}") for name in IN_STEP]
    for name in shipped(IN_STEP):
        function = next(getattr(m, name) for m in modules if hasattr(m, name))
        bound = types.FunctionType(
            function.__code__, namespace, name, function.__defaults__, function.__closure__
        )
        bound.__kwdefaults__ = function.__kwdefaults__
        bound.__doc__ = function.__doc__
        namespace[name] = bound


_bind_in_step_functions(globals())
