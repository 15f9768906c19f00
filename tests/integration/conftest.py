"""pytest wiring: the `tern` fixture gives each test its own running Tern."""
import sys

import pytest

import tern_harness


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures see whether the test failed (request.node.rep_call).
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _finish(request, inst):
    """Stops an instance; removes its directory unless the test failed (kept to look at)."""
    inst.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write(f"\nkept {inst.dir} (config, maillog, master.stderr) of the failed test\n")
    else:
        inst.cleanup()


@pytest.fixture
def tern(request):
    """A running Tern (tern-master and every daemon) in a fresh temporary directory."""
    inst = tern_harness.Tern()
    inst.start()
    yield inst
    _finish(request, inst)


@pytest.fixture
def tern_factory(request):
    """Make Tern instances with custom settings: tern_factory(settings={...}, start=True)."""
    made = []

    def make(settings=None, start=True, **kw):
        inst = tern_harness.Tern(settings=settings or {}, **kw)
        made.append(inst)
        if start:
            inst.start()
        return inst

    yield make
    for inst in made:
        _finish(request, inst)


@pytest.fixture
def mra(request):
    """A running Tern with one IMAP/POP3 user (mra_helpers.make_mra)."""
    from mra_helpers import make_mra
    inst = make_mra()
    yield inst
    _finish(request, inst)


@pytest.fixture
def crashing_mra(request):
    """As `mra`, for a test that crashes a daemon on purpose (Tern.expect_crashes)."""
    from mra_helpers import make_mra
    inst = make_mra(expect_crashes=True)
    yield inst
    _finish(request, inst)
