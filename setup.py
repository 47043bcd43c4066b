from setuptools import setup

# Everything else is in pyproject.toml; cffi_modules has no declarative form.
setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"])
