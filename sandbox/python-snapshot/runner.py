"""The guest side of aha's pre-initialised CPython (see sandbox/src/snapshot.rs).

componentize-py runs this module once, at build time, and snapshots the interpreter's memory
after it: CPython's start-up and the imports below are paid once, not per run. The host then
instantiates a fresh copy of that snapshot for every program (copy-on-write) and calls `run`
once, so nothing one program does is visible to the next.

`run` gives the program what `python -S -c CODE` gives it: a fresh `__main__` module,
`sys.argv == ['-c']`, its stdin/stdout/stderr, the exit status of `sys.exit`, `sys.excepthook`'s
traceback and status 1 for an uncaught exception, then its `atexit` functions.
"""

import atexit
import sys
import types

# The modules programs use most (HumanEval's imports, typical test harnesses): imported once, in
# the snapshot. Any other module of the standard library is imported at run time from the
# read-only mount of the same standard library.
import abc, array, bisect, cmath, collections, collections.abc, contextlib, copy, dataclasses  # noqa: E401,F401
import datetime, decimal, enum, fractions, functools, hashlib, heapq, io, itertools, json  # noqa: E401,F401
import math, numbers, operator, os, random, re, statistics, string, struct, textwrap, time  # noqa: E401,F401
import traceback, typing, unicodedata  # noqa: E401,F401

import wit_world


def _exit_status(code):
    """What CPython's exit does with SystemExit's argument."""
    if code is None:
        return 0
    if isinstance(code, int):
        return max(-(2**31), min(code, 2**31 - 1))
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


class WitWorld(wit_world.WitWorld):
    def run(self, code: str) -> int:
        # Every instance starts from the snapshot, so its random state is the one frozen there:
        # reseed from the host's entropy, as a fresh interpreter does at import.
        random.seed()
        sys.argv = ["-c"]
        main = types.ModuleType("__main__")
        main.__builtins__ = __builtins__
        sys.modules["__main__"] = main
        status = 0
        try:
            exec(compile(code, "<string>", "exec"), main.__dict__)
        except SystemExit as exit:
            status = _exit_status(exit.code)
        except BaseException as error:
            # As the interpreter reports it: through sys.excepthook, without this function's frame.
            try:
                sys.excepthook(type(error), error, error.__traceback__.tb_next)
            except BaseException:
                traceback.print_exception(type(error), error, error.__traceback__.tb_next)
            status = 1
        # What the interpreter does at exit: the program's atexit functions, then flushing.
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                status = status or 120  # CPython's status when flushing stdout fails at exit
        return status
