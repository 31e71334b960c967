"""Running a stage's command in a subprocess: its output to a log file, a hard time limit."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # None: killed at the time limit
    seconds: float
    log: Path

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def run_pytest(args: list[str], cwd: Path, log: Path, timeout_s: float) -> Finished:
    """`python -m pytest ARGS` in `cwd` with this interpreter; this checkout's fastclr first on the
    path (the same code as the run that starts it, installed or not)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[3])
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    start = time.monotonic()
    with log.open("w") as out:
        out.write("+ " + " ".join(command) + "\n")
        out.flush()
        try:
            code = subprocess.run(
                command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout_s
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    return Finished(code, time.monotonic() - start, log)
