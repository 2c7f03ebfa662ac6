"""setuptools' PEP 517 build backend, with ``data_files`` in editable wheels too.

``pip install .`` builds a regular wheel, which carries setup.cfg's
``[options.data_files]`` (the nbconvert template, and
``etc/jupyter/jupyter_server_config.d/kale_nbconvert.json``, which enables the
jupyter_server extension behind JupyterLab's Export > Kale error page). ``pip install -e
.`` builds an *editable* wheel, and setuptools leaves the data files out of it (its
``editable_wheel`` asks the distribution for ``has_data()``, which does not exist; the
method is ``has_data_files()``), so an editable install would silently lack them. This
backend adds each missing data file to the editable wheel (under
``<name>-<version>.data/data/``, with its RECORD line), the way a regular wheel holds it;
pip then installs it into the environment's prefix and removes it on uninstall. Files
setuptools already put there are left alone, so a fixed setuptools changes nothing.
Everything else is setuptools' own backend, unchanged.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import os
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (the PEP 517 hooks)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    add_data_files(Path(wheel_directory) / name, data_files(Path.cwd()))
    return name


def data_files(project: Path) -> dict[str, Path]:
    """setup.cfg's ``[options.data_files]``: install path (relative to the prefix) ->
    source file."""
    parser = configparser.ConfigParser()
    parser.read(project / "setup.cfg", encoding="utf-8")
    files = {}
    if parser.has_section("options.data_files"):
        for target, sources in parser.items("options.data_files"):
            for source in sources.split():
                files[f"{target.strip('/')}/{Path(source).name}"] = project / source
    return files


def add_data_files(wheel: Path, files: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheel) as old:
        entries = [(info, old.read(info)) for info in old.infolist()]
    record_name = next(info.filename for info, _ in entries if info.filename.endswith(".dist-info/RECORD"))
    data_dir = record_name.split("/")[0][: -len(".dist-info")] + ".data/data/"
    present = {info.filename for info, _ in entries}
    added = [(data_dir + target, source.read_bytes()) for target, source in sorted(files.items()) if data_dir + target not in present]
    if not added:
        return
    record = next(data for info, data in entries if info.filename == record_name).decode("utf-8")
    record_lines = [line for line in record.splitlines() if line and not line.startswith(record_name + ",")]
    for path, data in added:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
        record_lines.append(f"{path},sha256={digest},{len(data)}")
    record_lines.append(f"{record_name},,")
    partial = wheel.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as new:
        for info, data in entries:
            if info.filename != record_name:
                new.writestr(info, data)
        for path, data in added:
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            new.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
        new.writestr(record_name, "\n".join(record_lines) + "\n", compress_type=zipfile.ZIP_DEFLATED)
    os.replace(partial, wheel)
