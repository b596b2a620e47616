# A minimal test runner that runs *on MicroPython* (the unix port).
# A test file defines test_* functions and ends with:  mpyunit.main(globals())
# Output: one line per test, "ok NAME" or "FAIL NAME: error"; exit status 1 on failure.
import sys


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


def main(namespace, only=None):
    names = sorted(n for n in namespace if n.startswith("test_") and callable(namespace[n]))
    if len(sys.argv) > 1:
        only = sys.argv[1:]
    failed = 0
    ran = 0
    for name in names:
        if only and name not in only:
            continue
        ran += 1
        try:
            namespace[name]()
            print("ok", name)
        except Exception as e:  # noqa: a runner reports every failure and goes on
            failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            sys.print_exception(e)
    print("ran %d, failed %d" % (ran, failed))
    if ran == 0 or failed:
        sys.exit(1)
