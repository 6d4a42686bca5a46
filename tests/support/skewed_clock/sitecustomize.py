"""Shift the test server's wall clock by DCB_TEST_SERVER_CLOCK_SKEW seconds.

Put this folder on PYTHONPATH of the test server (scripts/testserver.py passes its
environment to the server it starts): Python imports `sitecustomize` at start-up, and
this one makes every `datetime.now()` inside SecantusDB -- `$$NOW`, `hello.localTime`
-- run that many seconds ahead of (or behind) the machine's clock. The lease tests use
it to stand for a client whose clock disagrees with the server's. Without the variable
it does nothing.
"""

import os

_SKEW = os.environ.get("DCB_TEST_SERVER_CLOCK_SKEW")


def _install(seconds: float) -> None:
    import datetime as real
    import sys
    import types

    shift = real.timedelta(seconds=seconds)
    base = real.datetime

    class _Meta(type):
        # Values stay plain datetimes; isinstance checks against the stand-in must
        # still accept them.
        def __instancecheck__(cls, obj):
            return isinstance(obj, base)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, base)

    class SkewedDatetime(base, metaclass=_Meta):
        def __new__(cls, *args, **kwargs):
            return base(*args, **kwargs)

        @classmethod
        def now(cls, tz=None):
            return base.now(tz) + shift

        @classmethod
        def utcnow(cls):
            return base.now(real.timezone.utc).replace(tzinfo=None) + shift

    class _Proxy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(real, name)

    proxy = _Proxy("datetime")
    proxy.datetime = SkewedDatetime

    import secantus.cli  # noqa: F401 - loads the server's modules to patch them

    for name, module in list(sys.modules.items()):
        if not name.startswith("secantus"):
            continue
        for attr, value in list(vars(module).items()):
            if value is real:
                setattr(module, attr, proxy)


if _SKEW:
    import sys as _sys

    # Only the server process: the launcher's and pip's own Python are left alone.
    if any(a.endswith(("secantusd-py", "secantusd-py.exe")) for a in _sys.argv[:1]):
        _install(float(_SKEW))
