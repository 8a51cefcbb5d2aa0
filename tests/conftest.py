"""Shared pytest set-up.

`python -m pytest --device gpu` runs the device-aware tests on CuPy. Where CuPy is not installed
it runs them on the strict CuPy stand-in instead (tests/cupy_standin: NumPy underneath, CuPy's
rules enforced), and pytest's header says so: the stand-in's folder goes on sys.path and on
PYTHONPATH, so the scripts that tests start as child processes use it too. With CuPy installed
but no usable CUDA device, the device-aware tests are skipped (not failed). The default is the
CPU (NumPy), and then the stand-in is importable only by the tests that ask for it (the
`cupy_standin` fixture in this process, `run_script(..., standin=True)` in a child process).
"""
import importlib.util
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import nn
import nn.functional  # noqa: F401  (the cupy_standin fixture empties its GPU generators)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN = os.path.join(ROOT, "tests", "cupy_standin")      # the `cupy` and `cupyx` stand-ins


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=("cpu", "gpu"),
                     help="run the device-aware tests on NumPy (cpu) or CuPy (gpu; the strict "
                          "CuPy stand-in, tests/cupy_standin, where CuPy is not installed)")


def standin_session(config):
    """True when this session runs --device gpu on the CuPy stand-in."""
    return getattr(config, "_cupy_standin", False)


def pytest_configure(config):
    """--device gpu without CuPy: the stand-in for this process and every child process."""
    config._cupy_standin = False
    if config.getoption("--device") == "gpu" and importlib.util.find_spec("cupy") is None:
        sys.path.insert(0, STANDIN)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [STANDIN] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        config._cupy_standin = True


def pytest_report_header(config):
    if standin_session(config):
        return ("device gpu: CuPy is not installed, so the GPU path runs on the strict CuPy "
                f"stand-in ({os.path.relpath(STANDIN, ROOT)}: NumPy underneath, CuPy 13's rules "
                "enforced); it proves the code's use of CuPy, not speed or memory")
    if config.getoption("--device") == "gpu":
        reason = nn.backend.gpu_unavailable_reason()
        return f"device gpu: {reason or 'CuPy ' + _import('cupy').__version__}"
    return None


def _import(name):
    return importlib.import_module(name)


@pytest.fixture(scope="session")
def device(request):
    """The device under test: "cpu", or "gpu" when --device gpu is given and CuPy works (one
    value for the whole session, so module-scoped fixtures such as a shared run can use it)."""
    name = request.config.getoption("--device")
    if name == "gpu":
        reason = nn.backend.gpu_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
    return name


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def child_env(standin=False, **extra):
    """The environment of a child process: this one's (which, in a --device gpu session on the
    stand-in, already puts the stand-in on PYTHONPATH), the stand-in added when `standin`, and
    the variables `extra`."""
    env = dict(os.environ, **extra)
    if standin:
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != STANDIN]
        env["PYTHONPATH"] = os.pathsep.join([STANDIN] + paths)
    return env


def run_script(script, *args, check=True, standin=False, env=None):
    """`python <script> args` from the repository root, as a user runs it (a real subprocess);
    with check=True a non-zero exit fails the test with the script's output. standin=True: the
    CuPy stand-in is the child's `cupy` (for `--device gpu` runs without a GPU); env: extra
    environment variables."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env=child_env(standin, **(env or {})))
    if check and result.returncode != 0:
        raise AssertionError(f"{script} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def tensor(array, device="cpu", requires_grad=False):
    """A float64 Tensor on `device` (for gradient checks)."""
    return nn.Tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad).to(device)


@pytest.fixture
def run_main(monkeypatch, capsys):
    """run_main(entry, argv) -> (exit code, stdout, stderr): a script's entry point (e.g.
    train_dcgan.train) run as `python script.py argv` runs it, through experiment.main, but in
    this process (milliseconds instead of a new interpreter)."""
    import experiment

    def run(entry, argv):
        monkeypatch.setattr(sys, "argv", ["script.py", *map(str, argv)])
        previous = signal.getsignal(signal.SIGINT)
        try:
            with pytest.raises(SystemExit) as caught:
                experiment.main(entry)
                sys.exit(0)
        finally:
            signal.signal(signal.SIGINT, previous)        # a run installs its Ctrl-C handler
        captured = capsys.readouterr()
        return caught.value.code, captured.out, captured.err
    return run


# ---- the CuPy stand-in in this process -----------------------------------------------------------

_standin_modules = {}      # name -> module: the stand-in, imported once per session


def _is_cupy_module(name):
    return name in ("cupy", "cupyx") or name.startswith(("cupy.", "cupyx."))


def standin_modules():
    """The stand-in's modules (cupy, cupyx and their submodules), imported once and then kept
    out of sys.modules except while a test asks for them."""
    if not _standin_modules:
        if STANDIN in sys.path:                            # a --device gpu session on the stand-in
            import cupy  # noqa: F401
            import cupyx  # noqa: F401
            _standin_modules.update({n: m for n, m in sys.modules.items() if _is_cupy_module(n)})
            return _standin_modules
        hidden = {n: sys.modules.pop(n) for n in list(sys.modules) if _is_cupy_module(n)}
        sys.path.insert(0, STANDIN)
        try:
            import cupy  # noqa: F401
            import cupyx  # noqa: F401
            _standin_modules.update({n: m for n, m in sys.modules.items() if _is_cupy_module(n)})
        finally:
            sys.path.remove(STANDIN)
            for name in _standin_modules:
                sys.modules.pop(name, None)
            sys.modules.update(hidden)
    return _standin_modules


@pytest.fixture
def cupy_standin(monkeypatch):
    """The CuPy stand-in as `import cupy` / `import cupyx` (so as the "gpu" device of nn.backend)
    for this test only, its counters reset; yields the cupy module. Afterwards `import cupy`
    finds what it found before (nothing, where CuPy is not installed)."""
    for name in [n for n in sys.modules if _is_cupy_module(n)]:
        monkeypatch.delitem(sys.modules, name)
    for name, module in standin_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    cupy = sys.modules["cupy"]
    assert getattr(cupy, "__standin__", False), "the cupy_standin fixture found another cupy"
    cupy._standin.reset()
    monkeypatch.setattr(nn.functional, "_gpu_generators", {})    # no generator of another cupy
    return cupy
