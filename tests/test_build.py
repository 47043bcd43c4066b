"""The build-failure path: without OpenSSL headers or a working C compiler the build stops with one
clear message naming what to install, not a compiler traceback.

csrc/build_ffi.py exposes check_build_environment(compiler=None, include_dirs=None), which raises
SystemExit with that message; it runs when setuptools imports the build script. Each case runs in
a fresh interpreter, as a build would."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD_FFI = ROOT / "csrc" / "build_ffi.py"

# Import the build script by path (it is not a package module) and run the check.
SNIPPET = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("build_ffi", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.check_build_environment()
print("BUILD ENVIRONMENT OK")
"""

HEADER_HINTS = ["libssl-dev", "openssl-devel", "openssl@3", "FASTTLS_OPENSSL_DIR"]
COMPILER_HINTS = ["C compiler", "gcc"]


def working_cc():
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no C compiler on this machine")


def run_check(tmp_path, **env_changes):
    env = dict(os.environ)
    for key in ("CC", "FASTTLS_OPENSSL_DIR"):
        env.pop(key, None)
    env.update(env_changes)
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(BUILD_FFI)],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def assert_clear_failure(code, output, hints):
    assert code != 0, output
    for hint in hints:
        assert hint in output, f"{hint!r} missing from the build message:\n{output}"
    # One clear message, not a traceback out of cffi or the compiler.
    assert "Traceback" not in output, output
    assert "BUILD ENVIRONMENT OK" not in output


@pytest.fixture(autouse=True)
def _build_script():
    if not BUILD_FFI.exists():
        pytest.fail(f"{BUILD_FFI} is missing")


def test_environment_ok_here(tmp_path):
    """This machine (and CI) has both; the check must pass, or the other tests prove nothing."""
    env = {}
    if os.environ.get("FASTTLS_OPENSSL_DIR"):
        env["FASTTLS_OPENSSL_DIR"] = os.environ["FASTTLS_OPENSSL_DIR"]
    code, output = run_check(tmp_path, **env)
    assert code == 0, output
    assert "BUILD ENVIRONMENT OK" in output


def test_missing_compiler(tmp_path):
    code, output = run_check(tmp_path, CC="/nonexistent/cc")
    assert_clear_failure(code, output, COMPILER_HINTS)
    assert "/nonexistent/cc" in output


def test_broken_compiler(tmp_path):
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` program")
    code, output = run_check(tmp_path, CC=false)
    assert_clear_failure(code, output, COMPILER_HINTS)


def test_missing_headers_with_empty_openssl_dir(tmp_path):
    empty = tmp_path / "empty-openssl"
    empty.mkdir()
    code, output = run_check(tmp_path, FASTTLS_OPENSSL_DIR=str(empty))
    assert_clear_failure(code, output, HEADER_HINTS)


def test_missing_headers_no_system_include_path(tmp_path):
    """A working compiler that finds no headers at all, as on a machine without libssl-dev
    (-nostdinc drops the default include search; a program without includes still builds)."""
    code, output = run_check(tmp_path, CC=f"{working_cc()} -nostdinc")
    assert_clear_failure(code, output, HEADER_HINTS)


def test_in_process_interface(tmp_path, monkeypatch):
    """check_build_environment(compiler=..., include_dirs=...) raises SystemExit itself."""
    import importlib.util

    monkeypatch.delenv("FASTTLS_OPENSSL_DIR", raising=False)
    monkeypatch.delenv("CC", raising=False)
    spec = importlib.util.spec_from_file_location("fasttls_build_ffi_under_test", str(BUILD_FFI))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "argv", ["setup.py", "egg_info"])  # importing must not check yet
    spec.loader.exec_module(module)

    module.check_build_environment()  # passes here
    with pytest.raises(SystemExit) as info:
        module.check_build_environment(compiler="/nonexistent/cc")
    for hint in COMPILER_HINTS:
        assert hint in str(info.value.code)
    with pytest.raises(SystemExit) as info:
        module.check_build_environment(compiler=f"{working_cc()} -nostdinc", include_dirs=[])
    for hint in HEADER_HINTS:
        assert hint in str(info.value.code)


def test_setup_build_stops_with_the_message(tmp_path):
    """Through setuptools, as `pip install` runs it: a copy of the source tree built with no
    usable compiler fails with the message, not a distutils traceback."""
    assert (ROOT / "setup.py").exists()
    import setuptools  # noqa: F401  (a test extra: bare venvs of Python >= 3.12 lack it)
    tree = tmp_path / "src"
    shutil.copytree(
        str(ROOT), str(tree),
        ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "*.so", "*.o", "__pycache__",
                                      ".pytest_cache", "tests", "bench"),
    )
    env = dict(os.environ, CC="/nonexistent/cc")
    env.pop("FASTTLS_OPENSSL_DIR", None)
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-temp", str(tmp_path / "t"),
         "--build-lib", str(tmp_path / "l")],
        cwd=str(tree), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    for hint in COMPILER_HINTS:
        assert hint in output, output
    assert "Traceback" not in output, output


def test_engine_abi_matches_the_header():
    """The ABI number the Python side expects is the one the engine header declares, and the
    installed compiled module was built from that header."""
    import re

    import _fasttls

    from fasttls._version import ENGINE_ABI

    header = (ROOT / "csrc" / "fasttls_engine.h").read_text()
    declared = int(re.search(r"#define FASTTLS_ABI (\d+)", header).group(1))
    assert declared == ENGINE_ABI
    assert _fasttls.lib.FASTTLS_ABI == ENGINE_ABI
