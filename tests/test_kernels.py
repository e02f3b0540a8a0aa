"""The C kernels' build module (ptalker_cli/kernels/build.py): signatures read from the C sources,
the warning check CI runs, and failure as "no kernel" rather than an error."""

import ctypes
from pathlib import Path

import pytest
import tomllib

from ptalker_cli.kernels import build

ROOT = Path(__file__).resolve().parent.parent
i32, i64, f32, p = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p


def test_signatures_are_read_from_the_c_prototypes():
    dec = build.exported_functions(build.source("decoder"))
    assert dec == {"decoder_num_params": (i32, []), "decode_pass": (i32, [i32] * 10 + [p] * 11)}
    gat = build.exported_functions(build.source("graph_encoder"))
    assert gat["gat_layer"] == (None, [p, i64, p, i64, i32, i32, i32, i32, i64, p, p, f32,
                                       p, i32, p, i32, i32, p, i64, p, p, i32])
    assert gat["transpose_f32"] == (None, [p, i64, i64, p, i32])
    assert gat["gat_max_features"] == (i32, [])


def test_signature_reader_rejects_what_it_cannot_map():
    with pytest.raises(ValueError, match="size_t"):
        build.exported_functions("KERNEL_API int f(size_t n) { return 0; }")
    with pytest.raises(ValueError, match="could not be read"):
        build.exported_functions("KERNEL_API int (*table)(void);")
    # comments and the marker's own #define are not functions
    src = '#define KERNEL_API __attribute__((visibility("default")))\n/* KERNEL_API int g(int x) { */\n' \
          "KERNEL_API void f(const float* const* a, double b) { }\n"
    assert build.exported_functions(src) == {"f": (None, [p, ctypes.c_double])}


def test_every_c_file_is_a_kernel_and_ships_in_the_wheel():
    assert {f.stem for f in (ROOT / "ptalker_cli" / "kernels").glob("*.c")} == set(build.KERNELS)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.c" in data["ptalker_cli.kernels"]


def test_a_failed_build_leaves_no_kernel_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PTALKER_CACHE", str(tmp_path))
    monkeypatch.setattr(build.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    k = build.Kernel("decoder")
    assert k.get() is None and not k.available()
    assert k.error == f"no C compiler '{tmp_path / 'no-such-cc'}' found"
    monkeypatch.setenv("PTALKER_NO_NATIVE", "1")
    assert build.Kernel("decoder").get() is None


@pytest.mark.system("cc")
def test_kernels_compile_without_warnings():
    """What CI runs as ``python -m ptalker_cli.kernels.build --check -Werror``."""
    assert build.check(werror=True) == {}
    assert build.main(["--check", "-Werror"]) == 0


@pytest.mark.system("cc")
def test_the_check_reports_a_warning(monkeypatch, tmp_path):
    (tmp_path / "decoder.c").write_text("int f(int x) { int unused; return x; }\n")
    monkeypatch.setattr(build, "KERNELS_DIR", tmp_path)
    problems = build.check(names=["decoder"])
    assert len(problems) == 1 and "unused" in next(iter(problems.values()))
    assert build.main(["--check"]) == 1


@pytest.mark.system("cc")
def test_loaded_kernels_have_the_declared_signatures():
    for name in build.KERNELS:
        lib = build.Kernel(name).get()
        assert lib is not None
        for fn, (restype, argtypes) in build.exported_functions(build.source(name)).items():
            assert getattr(lib, fn).argtypes == argtypes and getattr(lib, fn).restype == restype


@pytest.mark.parametrize("env", [{"PTALKER_CACHE": "~/somewhere"}, {"XDG_CACHE_HOME": "/x/cache"}, {}])
def test_kernel_cache_is_in_ptalker_cache(monkeypatch, env):
    """The kernels spell out ptalker's cache rule themselves (they import nothing of the package): it must agree."""
    from ptalker_cli.resources import ptalker_cache_dir

    for name in ("PTALKER_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert build.cache_dir() == ptalker_cache_dir() / "kernels"
