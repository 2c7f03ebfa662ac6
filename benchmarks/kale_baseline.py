"""Kale 2.3.0 (``kubeflow-kale`` on PyPI), the tool this project replaces, as a baseline.

Why a separate venv: Kale pins its own kfp/nbformat/jupyter stack and must not touch
the environment being measured. The harness creates ``benchmarks/.venv-kale``
(git-ignored) itself on first use and reuses it afterwards. If the venv or the install
fails, callers get the reason and report the baseline as unavailable: a missing
baseline must never stop the other figures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

KALE_VERSION = "2.3.0"
VENV = Path(__file__).resolve().parent / ".venv-kale"
MARKER = VENV / f".kubeflow-kale-{KALE_VERSION}-installed"


def kale_executable(log=print):
    """Path of ``kale`` in the baseline venv, creating it if needed.

    Returns ``(path, None)`` or ``(None, reason)``.
    """
    kale = VENV / "bin" / "kale"
    if MARKER.exists() and kale.exists():
        return kale, None
    log(f"creating {VENV} with kubeflow-kale=={KALE_VERSION} (once; takes a minute or two)")
    shutil.rmtree(VENV, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", f"kubeflow-kale=={KALE_VERSION}"],
    ]
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"{Path(argv[0]).name}: {error}"
        if done.returncode != 0:
            lines = [
                line for line in (done.stderr or done.stdout).splitlines()
                if line.strip() and not line.startswith("WARNING: Location")
            ]
            return None, f"{' '.join(argv[1:4])} failed: {' | '.join(lines[-3:])}"
    if not kale.exists():
        return None, "kubeflow-kale installed no 'kale' command"
    MARKER.touch()
    return kale, None


def install_into_venv(requirements, log=print):
    """Install pinned ``requirements`` (e.g. our numpy and pandas versions) into the
    baseline venv once, so a Kale 2.3.0 figure differs from ours only in Kale's code.

    Returns ``None`` or the reason it failed.
    """
    marker = VENV / (".installed-" + "-".join(sorted(requirements)).replace("==", "-"))
    if marker.exists():
        return None
    log(f"installing {' '.join(requirements)} into {VENV.name} (once)")
    argv = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", *requirements]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"pip install {' '.join(requirements)}: {error}"
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return f"pip install {' '.join(requirements)} failed: {' | '.join(lines[-3:])}"
    marker.touch()
    return None
