"""Build the Cython kernels.

Environment variables read at build time:
  FASTCONV_NO_OPENMP=1  build without OpenMP (kernels then run on one thread)
  FASTCONV_NATIVE=1     add -march=native (only for a local build; such a binary may not run elsewhere)
  FASTCONV_DEBUG=1      turn Cython bounds and wraparound checks back on (for testing)
"""
import os
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "").strip() not in ("", "0", "false", "False")


OMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
    """
)


class BuildExt(build_ext):
    """Probe the compiler for OpenMP once, then add the flags to every extension."""

    def build_extensions(self):
        compile_args = ["-O3"] if self.compiler.compiler_type != "msvc" else ["/O2"]
        link_args = []
        if _flag("FASTCONV_NATIVE") and self.compiler.compiler_type != "msvc":
            compile_args.append("-march=native")
        openmp = not _flag("FASTCONV_NO_OPENMP") and self._has_openmp()
        if openmp:
            if self.compiler.compiler_type == "msvc":
                compile_args.append("/openmp")
            else:
                compile_args.append("-fopenmp")
                link_args.append("-fopenmp")
        elif not _flag("FASTCONV_NO_OPENMP"):
            print("WARNING: the compiler does not support OpenMP; fastconv will run on one thread",
                  file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
            ext.define_macros = list(ext.define_macros) + [
                ("FASTCONV_OPENMP", "1" if openmp else "0"),
                ("FASTCONV_COMPILE_ARGS", '"%s"' % " ".join(compile_args)),
            ]
        super().build_extensions()

    def _has_openmp(self):
        flag = "/openmp" if self.compiler.compiler_type == "msvc" else "-fopenmp"
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "omp_test.c"
            src.write_text(OMP_TEST)
            try:
                objs = self.compiler.compile([str(src)], output_dir=tmp, extra_postargs=[flag])
                self.compiler.link_executable(objs, str(Path(tmp) / "omp_test"),
                                              extra_postargs=[flag])
            except Exception:
                return False
        return True


debug = _flag("FASTCONV_DEBUG")
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
    "embedsignature": True,
}

kernel_dir = Path("fastconv") / "_kernels"
extensions = [
    Extension(
        "fastconv._kernels." + pyx.stem,
        [str(pyx)],
        include_dirs=[numpy.get_include(), str(kernel_dir)],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for pyx in sorted(kernel_dir.glob("*.pyx"))
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives),
    cmdclass={"build_ext": BuildExt},
)
