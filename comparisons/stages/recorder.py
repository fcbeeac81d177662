"""A profiler (py-spy, perf) recording into a temporary file while the load runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Recorder:
    name: str
    proc: subprocess.Popen
    path: str

    @classmethod
    def start(cls, name: str, argv: Callable[[str], list[str]], cpu: int | None) -> Recorder:
        """Run `argv(output path)`, pinned to `cpu` (away from the server)."""
        fd, path = tempfile.mkstemp(prefix="flash-stages-")
        os.close(fd)
        command = argv(path)
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        return cls(name, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True), path)

    def finish(self, timeout: float, read: Callable[[str], T]) -> T:
        """Wait for the recorder to end by itself, then `read(output path)`; the file is removed."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
            if self.proc.returncode != 0:
                raise RuntimeError(f"{self.name} failed ({self.proc.returncode}): {err.strip()[-500:]}")
            return read(self.path)
        finally:
            os.unlink(self.path)
