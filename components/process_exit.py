"""A quick exit for the two Python processes the engine waits for at the end of every `up`,
`preview` and `refresh`: the program and the SDK's dynamic-provider process (HostKey, HostState).

Python's exit runs the cyclic garbage collector over every object still alive. After the Pulumi
SDK is imported (protobuf descriptors, grpc) that alone takes ~0.1 s, and the engine saves the
stack only after both processes have ended. `gc.freeze()`, made for this, moves the objects alive
at the call out of the collector's sight: they are neither scanned again by the collections
while the process runs nor at its exit. They stay alive until the process ends, which these
processes do within seconds, so nothing is kept that would otherwise have been freed in time."""
from __future__ import annotations

import gc
import sys


def freeze_loaded_objects() -> None:
    """In the program: call once the SDK is loaded, and again when the program's code is done."""
    gc.freeze()


def freeze_in_dynamic_provider_process() -> None:
    """Call at the import of a dynamic provider's module. The SDK's provider process (`python -m
    pulumi.dynamic`) imports it to unpickle the provider, with the SDK already loaded; any other
    process that imports the module (the program, a test run) is left as it is."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name.partition(".__main__")[0] == "pulumi.dynamic":
        gc.freeze()
