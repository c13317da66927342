"""The run store: the only code that builds paths; atomic writes; typed files."""
from .io import (
                 FORMAT_VERSION,
                 atomic_path,
                 load_weights,
                 read_json,
                 read_table,
                 save_weights,
                 write_bytes,
                 write_json,
                 write_npy,
                 write_table,
                 write_text,
)

__all__ = ["FORMAT_VERSION", "atomic_path", "load_weights", "read_json", "read_table", "save_weights",
           "write_bytes", "write_json", "write_npy", "write_table", "write_text"]
from .layout import Claim, CorruptStep, StepState, Store  # noqa: E402

__all__ += ["Claim", "CorruptStep", "Store", "StepState"]
