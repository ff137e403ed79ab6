import pytest

from cuda_emulation import emulation


@pytest.fixture(scope="session")
def emu():
    return emulation.load()


@pytest.fixture(params=[0, 2], ids=["full-grid", "grid-cap-2"])
def grid_cap(request, emu):
    """Every test runs twice: with the hardware's grid limits, and with every grid extent capped
    at 2 blocks so that the launchers' grid-stride loops (batches beyond gridDim.y/z, pixels
    beyond gridDim.x) run at small sizes."""
    emu.set_grid_cap(request.param)
    yield request.param
    emu.set_grid_cap(0)


def pytest_terminal_summary(terminalreporter):
    if emulation.LARGEST_DIFFERENCE:
        terminalreporter.write_sep("-", "CUDA emulation: largest |emulated CUDA - CPU| per dtype and quantity")
        terminalreporter.write_line(f"{'dtype':9s} {'quantity':34s} {'|difference|':>12s} {'of tolerance':>12s}")
        for (dtype, what), (diff, share) in sorted(emulation.LARGEST_DIFFERENCE.items()):
            terminalreporter.write_line(f"{dtype:9s} {what:34s} {diff:12.3g} {share:12.1%}")
