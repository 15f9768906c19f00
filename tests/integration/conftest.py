"""pytest wiring: the `tern` fixture gives each test its own running Tern."""
import pytest

import tern_harness


@pytest.fixture
def tern(request):
    """A running Tern (tern-master and every daemon) in a fresh temporary directory."""
    inst = tern_harness.Tern()
    inst.start()
    yield inst
    inst.stop()


@pytest.fixture
def tern_factory():
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
        inst.stop()
