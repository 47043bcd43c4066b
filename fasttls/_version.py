__version__ = "0.1.0"
# The engine interface (FASTTLS_ABI in csrc/fasttls_engine.h) this Python code was written for.
ENGINE_ABI = 10
