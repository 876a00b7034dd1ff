"""The module's binary under test: where it and the module's tree are, and how to run it."""
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples"
BIN = pathlib.Path(os.environ.get("EMBEDDED_REGISTRY_BIN", ROOT / "target" / "release" / "embedded-registry"))


def run(args, env=None, cwd=None, stdin=None, timeout=120):
    """Runs the binary; returns the CompletedProcess (text mode)."""
    return subprocess.run([str(BIN), *args], env=env, cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout)
