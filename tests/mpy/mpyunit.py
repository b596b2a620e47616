# A minimal test runner that runs *on MicroPython* (the unix port).
# A test file defines test_* functions and ends with:  mpyunit.main(globals())
# It runs them in sorted order; names given on the command line run only those.
#
# By hand (`micropython tests/mpy/test_led.py [NAME ...]`): one line per test, "ok NAME"
# or "FAIL NAME: error" and its traceback, then "ran N, failed M"; exit status 1 on failure.
#
# With MPYUNIT_REPORT=1 in the environment (tests/test_agent_mpy.py), the lines are for a
# machine instead: each is MARK followed by one JSON object, in this order
#   {"tests": [NAME, ...]}        the functions it is about to run
#   {"start": NAME}               before each one; what the function prints follows
#   {"name": NAME, "ok": true}    after it, or
#   {"name": NAME, "ok": false, "error": "Type: text", "traceback": "..."}
#   {"ran": N, "failed": M}       at the end
# A function that never gets its result line (the script crashed, was killed or ran out of
# heap) is a failure to the reader (testing/mpy.py), never a pass.
import gc
import io
import json
import os
import sys

MARK = "##mpyunit "


class Skip(Exception):
    pass


def eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%r != %r %s" % (a, b, msg))


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def _report(obj):
    print(MARK + json.dumps(obj))


def _failure(name, e):
    # After a MemoryError there may be little heap left: free what the test left behind,
    # and fall back to the exception's name when even the traceback cannot be formatted.
    gc.collect()
    error = tb = ""
    try:
        error = "%s: %s" % (type(e).__name__, e)
        buf = io.StringIO()
        sys.print_exception(e, buf)
        tb = buf.getvalue()
    except Exception:  # noqa: out of heap; the name is still worth reporting
        pass
    return {"name": name, "ok": False, "error": error or type(e).__name__, "traceback": tb}


def main(namespace, only=None):
    names = sorted(n for n in namespace if n.startswith("test_") and callable(namespace[n]))
    if len(sys.argv) > 1:
        only = sys.argv[1:]
    if only:
        names = [n for n in names if n in only]
    report = os.getenv("MPYUNIT_REPORT") == "1"
    if report:
        _report({"tests": names})
    failed = 0
    ran = 0
    for name in names:
        ran += 1
        if report:
            _report({"start": name})
        try:
            namespace[name]()
        except Exception as e:  # noqa: a runner reports every failure and goes on
            failed += 1
            if report:
                _report(_failure(name, e))
            else:
                print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
                sys.print_exception(e)
            continue
        if report:
            _report({"name": name, "ok": True})
        else:
            print("ok", name)
    if report:
        _report({"ran": ran, "failed": failed})
    else:
        print("ran %d, failed %d" % (ran, failed))
    if ran == 0 or failed:
        sys.exit(1)
