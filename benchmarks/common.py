"""Shared plumbing: timed subprocesses with their peak RSS, medians, results, the table.

Why these choices:

* Every figure is a ratio against a baseline measured in the same run, because the
  machines this runs on (2 shared cores, other jobs) are noisy: absolute seconds move
  between runs, the ratio much less.
* Each timing is the median of ``runs`` measurements after one warm-up run, so a
  cold page cache or a one-off stall does not become the figure.
* A subprocess is reaped with ``os.wait4`` to get *its own* ``ru_maxrss``: the peak
  resident set of the largest process in its tree (Linux counts the descendants it
  waited for), without a ``/usr/bin/time`` dependency and without mixing it up with
  other children (which ``RUSAGE_CHILDREN`` would).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- subprocesses


@dataclasses.dataclass
class Measured:
    """One finished subprocess: wall seconds, peak RSS (MiB), exit code, output."""

    seconds: float
    rss_mib: float
    returncode: int
    stdout: str
    stderr: str


class BenchmarkError(RuntimeError):
    """A measured command failed; the figure is reported as not available."""


def run_measured(argv, cwd=None, timeout=600, env=None, check=True) -> Measured:
    """Run ``argv``; wall time from just before the fork to reaping, RSS via ``wait4``.

    Output goes to temporary files (not pipes) so the process never blocks on a full
    pipe and we can reap it ourselves with ``os.wait4`` to read its resource usage.
    """
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(a) for a in argv], cwd=cwd, stdout=out, stderr=err,
            stdin=subprocess.DEVNULL, env=full_env, start_new_session=True,
        )
        timer = threading.Timer(timeout, _kill_group, args=(proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Measured(
            seconds, usage.ru_maxrss / 1024.0, proc.returncode,
            out.read().decode(errors="replace"), err.read().decode(errors="replace"),
        )
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()
        print(f"[bench] command failed: {' '.join(map(str, argv))}\n  "
              + "\n  ".join(output[-15:]), file=sys.stderr)
        last = output[-1].strip() if output else "no output"
        program = Path(str(argv[0])).name
        if str(argv[0]) == sys.executable and len(argv) > 1:
            program = f"python {Path(str(argv[1])).name}"
        raise BenchmarkError(f"{program} exited {result.returncode}: {last[:150]}")
    return result


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def repeat(measure, runs: int, warmup: int = 1):
    """Call ``measure()`` ``warmup`` times (discarded) then ``runs`` times; return the
    list of kept results. ``measure`` returns a :class:`Measured` or a float."""
    for _ in range(warmup):
        measure()
    return [measure() for _ in range(runs)]


def median_seconds(samples) -> float:
    return statistics.median(s.seconds if isinstance(s, Measured) else s for s in samples)


def max_rss(samples) -> float:
    return max(s.rss_mib for s in samples)


def nbconvert_command() -> list:
    """``jupyter nbconvert`` of *this* interpreter (not whatever a pyenv shim picks)."""
    script = Path(sys.executable).parent / "jupyter-nbconvert"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "jupyter", "nbconvert"]


def examples() -> list:
    """The example notebooks present right now (others may be adding some)."""
    return sorted(EXAMPLES.glob("*.ipynb"))


_RUN_DIR = None


def scratch_dir(name: str) -> Path:
    """A fresh folder for generated files under ``benchmarks/results/work/`` (git-ignored),
    inside a folder private to this process: two harness runs at once (a full run and
    the test suite's --quick) must not delete each other's working directories."""
    global _RUN_DIR
    if _RUN_DIR is None:
        (RESULTS / "work").mkdir(parents=True, exist_ok=True)
        _RUN_DIR = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"),
                                         dir=RESULTS / "work"))
    path = _RUN_DIR / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def remove_scratch():
    """Delete this process's working folder (the figures are in the table already)."""
    if _RUN_DIR is not None:
        shutil.rmtree(_RUN_DIR, ignore_errors=True)


# ---------------------------------------------------------------- results


@dataclasses.dataclass
class Result:
    """One row of the table.

    ``target_on`` says what the target bounds: ``"value"`` (our value, in ``unit``),
    ``"ratio"`` (ours / baseline) or ``None`` (reported only). ``ours`` or ``baseline``
    is ``None`` when not measured; ``note`` then says why.
    """

    group: str
    figure: str
    ours: float | None
    baseline: float | None
    baseline_name: str
    unit: str
    target: float | None = None
    target_on: str | None = None
    note: str = ""

    @property
    def ratio(self):
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    @property
    def met(self):
        if self.target_on == "value" and self.ours is not None:
            return self.ours <= self.target
        if self.target_on == "ratio" and self.ratio is not None:
            return self.ratio <= self.target
        return None

    def as_dict(self):
        data = dataclasses.asdict(self)
        data.update(ratio=self.ratio, met=self.met)
        return data


def unavailable(group, figure, baseline_name, unit, reason, **kw) -> Result:
    return Result(group, figure, None, None, baseline_name, unit, note=reason, **kw)


def _fmt(value, unit):
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.2f}{unit}"


def format_table(results) -> str:
    """A Markdown table (readable in a terminal, pasteable into README.md)."""
    header = ["group", "figure", "ours", "baseline", "ratio", "target", "met"]
    rows = []
    for r in results:
        baseline = _fmt(r.baseline, r.unit)
        if r.baseline_name:
            baseline = f"{baseline} ({r.baseline_name})"
        if r.target_on == "value":
            target = f"<= {_fmt(r.target, r.unit)}"
        elif r.target_on == "ratio":
            target = f"ratio <= {r.target:.3g}x"
        else:
            target = "report only"
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}x"
        figure = r.figure + (f" [{r.note}]" if r.note else "")
        rows.append([r.group, figure, _fmt(r.ours, r.unit), baseline, ratio, target, met])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(row) for row in rows)])


# ---------------------------------------------------------------- environment


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Cores, memory, CPU model and tool versions: figures mean nothing without them."""
    cpu = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.1f} GiB"
    except (ValueError, OSError):
        memory = "unknown"

    def version(dist):
        return installed_version(dist) or "not installed"

    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "cores": os.cpu_count(),
        "memory": memory,
        "cpu": cpu,
        "load_average_at_start": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "kfp": version("kfp"),
        "nbconvert": version("nbconvert"),
        "nbclient": version("nbclient"),
        "kale_nbconvert": version("kale-nbconvert"),
        "import_floor": import_floor(),
    }


def import_floor() -> str:
    """Seconds ``python -c "import nbconvert"`` takes, and the slowest module under it:
    the start-up every ``jupyter nbconvert`` exporter pays before doing any work, so a
    reader can tell our cost from the environment's."""
    try:
        done = run_measured([sys.executable, "-X", "importtime", "-c", "import nbconvert"])
    except BenchmarkError as error:
        return f"unavailable ({error})"
    worst = ("?", 0)
    for text in done.stderr.splitlines():
        parts = text.split("|")
        if len(parts) == 3 and parts[0].split(":")[-1].strip().isdigit():
            own = int(parts[0].split(":")[-1])
            if own > worst[1]:
                worst = (parts[2].strip(), own)
    return (f"{done.seconds:.2f} s wall, slowest single module {worst[0]} "
            f"{worst[1] / 1e6:.2f} s")


def format_header(info: dict, options: str) -> str:
    return "\n".join([
        f"kale_nbconvert benchmarks ({options})",
        f"machine: {info['cores']} cores, {info['memory']} RAM, {info['cpu']}, "
        f"load average at start {info['load_average_at_start']}",
        f"versions: python {info['python']}, kfp {info['kfp']}, nbconvert "
        f"{info['nbconvert']}, nbclient {info['nbclient']}, kale_nbconvert "
        f"{info['kale_nbconvert']}",
        f"start-up floor of any nbconvert exporter (python -c 'import nbconvert'): "
        f"{info['import_floor']}",
    ])


def write_json(path, info, options, results):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(
        {"options": options, "machine": info, "results": [r.as_dict() for r in results]},
        indent=2,
    ) + "\n")
