"""The `fastclr` command parses its flags without importing torch (about 1.3 s here), so --help
and a bad flag answer at once; the losses still import from the package on first use."""

import subprocess
import sys

import pytest


def python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter: what is imported depends on nothing this process loaded."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_building_the_parser_does_not_import_torch():
    done = python(
        "import sys\n"
        "from fastclr.cli.main import build_parser\n"
        "build_parser().parse_args(['train', '--method', 'byol', '--epochs', '3'])\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(len(loaded), loaded[:5])\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 "), done.stdout


@pytest.mark.parametrize("name", ["nt_xent", "NTXentLoss", "sup_con", "ClipLoss"])
def test_losses_import_from_the_package_on_first_use(name):
    import fastclr
    import fastclr.loss
    import fastclr.ops

    source = fastclr.loss if name[0].isupper() else fastclr.ops
    assert getattr(fastclr, name) is getattr(source, name)
    assert name in dir(fastclr)


def test_an_unknown_name_is_an_attribute_error():
    import fastclr

    with pytest.raises(AttributeError, match="no attribute 'nt_xnet'"):
        fastclr.nt_xnet  # noqa: B018
