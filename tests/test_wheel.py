"""The package works when installed from a wheel, away from this source tree."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy: setuptools keeps a build/ directory whose stale files would leak in
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    for pkg in ("chaos_hvd", "testbed"):
        shutil.copytree(os.path.join(REPO, pkg), src / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                           capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip()[-200:]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("chaos_hvd-*.whl")
    site = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(site), str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert inst.returncode == 0, inst.stderr
    # the wheel's copy must win over the editable install: PYTHONPATH comes first, and the
    # commands run outside the source tree
    env = {**os.environ, "PYTHONPATH": str(site)}
    return wheel, site, env, tmp


def _run(code_or_argv, env, cwd):
    argv = [sys.executable, "-c", code_or_argv] if isinstance(code_or_argv, str) else code_or_argv
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_wheel_holds_the_runtime_packages_only(installed):
    wheel = installed[0]
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {"chaos_hvd", "testbed"} <= tops
    assert not tops & {"harness", "tests", "bench", "ci", "examples"}, tops


def test_installed_package_imports_and_runs_its_commands(installed):
    _, site, env, tmp = installed
    out = _run("import chaos_hvd, chaos_hvd.cluster.agent, chaos_hvd.state.scheduler, testbed.cli;"
               "print(chaos_hvd.__file__)", env, tmp)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(site)), out.stdout
    pytest.importorskip("horovod.torch")
    out = _run("import chaos_hvd; print(chaos_hvd.ChaosState.__module__)", env, tmp)
    assert out.returncode == 0 and out.stdout.strip() == "chaos_hvd.state.adapter", out.stderr
    out = _run([sys.executable, "-m", "chaos_hvd.cluster.cli", "discover", "--socket",
                str(tmp / "none.sock")], env, tmp)
    assert out.returncode == 1 and "no agent" in out.stderr
    topo = os.path.join(REPO, "topologies", "paper-5plus1-small.yaml")
    out = _run([sys.executable, "-m", "testbed.cli", "check", topo], env, tmp)
    assert out.returncode == 0 and "OK" in out.stderr, out.stderr
    out = _run([sys.executable, "-m", "chaos_hvd.scaleout.cli", "--help"], env, tmp)
    assert out.returncode == 0 and "--host-discovery-script" in out.stdout, out.stderr
    out = _run([sys.executable, "-m", "chaos_hvd.scaleout.cli", "-np", "1", "true"],
               {**env, "CHAOS_JOB_SECRET": "not-hex"}, tmp)
    assert out.returncode == 2 and "CHAOS_JOB_SECRET" in out.stderr, out.stderr
