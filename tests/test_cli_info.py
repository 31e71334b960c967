"""`fastclr info`: versions, which DALI build is installed and whether it loads, usable backends."""

import subprocess
import sys

from fastclr.cli.info import print_dali


def test_info_runs_and_names_the_dali_build():
    result = subprocess.run([sys.executable, "-m", "fastclr.cli.main", "info"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    dali = [line for line in result.stdout.splitlines() if line.startswith("nvidia-dali")]
    assert len(dali) == 1
    assert "not installed" in dali[0] or ("nvidia-dali-cuda1" in dali[0] and "load" in dali[0])
    assert "loss backends" in result.stdout
    members = result.stdout.split("loss family members per backend")[1]
    assert "chunked" in members and "sup_con" in members and "clip_loss" in members


def test_dali_lines_for_each_driver_generation(capsys):
    print_dali(lambda name: None)
    assert "fastclr[dali-cuda12]" in capsys.readouterr().out  # how to install, for both drivers
    print_dali(lambda name: "2.4.0" if name == "nvidia-dali-cuda120" else None)
    out = capsys.readouterr().out
    assert "nvidia-dali-cuda120, for CUDA 12 drivers" in out and "both" not in out
    print_dali(lambda name: "2.4.0")
    assert "both DALI builds are installed" in capsys.readouterr().out
