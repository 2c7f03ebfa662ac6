"""Run generated scripts the way ``python script.py ARGS`` does (and ``python -m
nbconvert ARGS``), without paying the interpreter's start and kfp's (or nbconvert's)
import, about 0.8 s, for each of the suite's ~120 script runs.

One server process per test worker imports kfp once (``PRELOAD``) and forks a child
per request; the child becomes what ``python script.py`` would be: its own process
(and process group), the script's folder as ``sys.path[0]`` and working directory, the
requested environment, ``sys.argv``, the script run as ``__main__`` by ``runpy``, an
uncaught exception printed with exit code 1, then the interpreter's exit work (non-daemon
threads joined, ``atexit``), stdout and stderr to files the caller reads. It starts
with nothing a fresh interpreter would not have but kfp's modules, which every script
imports first, and IPython, which ``kfp.Client`` imports to ask whether it runs in a
notebook (0.35 s of every ``--host`` run). The steps of a ``--local`` run, the warm
worker and ``--isolated``'s fresh interpreters are the script's own processes, as ever.

A second server (``NBCONVERT_PRELOAD``) runs ``python -m nbconvert`` the same way, for
the tests that run the converter's command line case after case.

``KALE_TEST_SCRIPT_SERVER=0`` starts a new interpreter for every generated script
instead (a platform without ``fork`` does so for both kinds of run);
``tests/helpers.py`` falls back to that by itself if a server cannot start.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

PRELOAD = ("kfp", "kfp.dsl", "kfp.compiler", "kfp.local", "kfp.components", "yaml", "IPython")
"""What a server for generated scripts imports before forking."""
NBCONVERT_PRELOAD = ("nbconvert.nbconvertapp", "kale_nbconvert.exporter")
"""What a server for ``python -m nbconvert`` runs imports before forking."""


def _child(request: dict, out_path: str, err_path: str) -> None:
    """In the forked child: become ``python script ARGS`` and never return."""
    import atexit
    import runpy
    import threading
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)  # a process group of its own, so a timeout kills its children too
        source = os.open(request.get("stdin") or os.devnull, os.O_RDONLY)
        os.dup2(source, 0)
        os.close(source)
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        argv = list(request["argv"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        try:
            if argv[0] == "-m":  # python -m MODULE ARGS: the working folder first on the path
                sys.argv = argv[1:]
                sys.path[0] = os.getcwd()
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = argv
                sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
                runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if stop.code is not None and not isinstance(stop.code, int):
                print(stop.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught one
            traceback.print_exc()
            code = 1
        threading._shutdown()  # what the interpreter does at exit: join non-daemon threads
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve(listener: socket.socket) -> None:
    """One request at a time (a test worker runs one test at a time)."""
    import signal
    import time

    while True:
        connection, _ = listener.accept()
        with connection:
            request = json.loads(connection.makefile("r", encoding="utf-8").readline())
            if request.get("stop"):
                return
            out_path, err_path = request["out"], request["err"]
            pid = os.fork()
            if pid == 0:
                listener.close()
                connection.close()
                _child(request, out_path, err_path)
            deadline = time.monotonic() + request["timeout"]
            status, timed_out = None, False
            while status is None:
                done, raw = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = raw
                elif time.monotonic() > deadline:
                    timed_out = True
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    _, status = os.waitpid(pid, 0)
                else:
                    time.sleep(0.005)
            code = os.waitstatus_to_exitcode(status)
            connection.sendall((json.dumps({"code": code, "timed_out": timed_out}) + "\n").encode())


class ScriptServer:
    """The test worker's side: start the server, run scripts through it, stop it."""

    def __init__(self, preload=PRELOAD):
        self.folder = tempfile.mkdtemp(prefix="kale-script-server-")
        self.address = os.path.join(self.folder, "socket")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.address, *preload],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.process.kill()
            raise RuntimeError(f"the script server did not start: {ready!r}")
        self.runs = 0

    def run(self, argv, cwd, env, timeout, stdin: str | None = None) -> subprocess.CompletedProcess:
        """``python ARGV`` (a script and its arguments, or ``-m MODULE ...``) in ``cwd``,
        reading ``stdin`` (text) as its standard input, or nothing."""
        self.runs += 1
        out = os.path.join(self.folder, f"{self.runs}.out")
        err = os.path.join(self.folder, f"{self.runs}.err")
        request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "env": dict(env),
                   "timeout": timeout, "out": out, "err": err, "stdin": None}
        if stdin is not None:
            request["stdin"] = os.path.join(self.folder, f"{self.runs}.in")
            with open(request["stdin"], "w", encoding="utf-8") as handle:
                handle.write(stdin)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
            channel.connect(self.address)
            channel.sendall((json.dumps(request) + "\n").encode())
            reply = json.loads(channel.makefile("r", encoding="utf-8").readline())
        stdout, stderr = (_read_and_remove(path) for path in (out, err))
        if request["stdin"]:
            os.remove(request["stdin"])
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired([sys.executable, *argv], timeout, stdout, stderr)
        return subprocess.CompletedProcess([sys.executable, *argv], reply["code"], stdout, stderr)

    def stop(self) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
                channel.connect(self.address)
                channel.sendall(b'{"stop": true}\n')
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
        finally:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


def _read_and_remove(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
    finally:
        if os.path.exists(path):
            os.remove(path)


def main(address: str, preload) -> None:
    for module in preload:
        __import__(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(4)
    print("ready", flush=True)
    _serve(listener)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
