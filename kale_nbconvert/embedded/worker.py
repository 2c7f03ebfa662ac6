"""The warm fork worker of a ``--local`` run. Runs in the script's command line, never
inside a step.

One process imports the notebook's installed modules once (``PRELOAD``) and forks a
child per step, so each step starts warm instead of paying the imports again; the
launcher side talks to it over a socket pair (``_kale_worker_send``/``_receive``).

Steps may be submitted from several threads at once (``--jobs``): each submission
brings its own reply channel, the worker keeps several children running and answers
each on its own channel when that child ends, so no two steps share a request in
flight and a child that crashes fails only its own step.

Every step's component module repeats the whole in-step runtime: the worker compiles
each of its top-level chunks once (``_kale_worker_compile``), so a child compiles
none of it and only executes the code (``_kale_worker_use_compiled``).
"""


def _kale_worker_start(preload):
    """Start the warm worker of a ``--local`` run, or return None where it cannot be.

    A step's process normally starts Python, imports kfp and then the notebook's
    libraries (pandas, scikit-learn: seconds) before its first cell. The worker is
    one process that imports them once (``preload``: the notebook's imports of
    installed libraries, never its own code) and forks one child per step, which
    runs kfp's executor exactly as the step's process would, in a fresh ``__main__``.
    Fork exists on Linux and macOS only; elsewhere (and with ``--isolated``) every
    step gets a fresh interpreter, as on a cluster.
    """
    import os
    import socket
    import subprocess
    import sys
    import threading

    if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return None
    import inspect

    try:  # the worker's own functions, from this script: it needs nothing else
        code = "\n\n".join(
            inspect.getsource(function)
            for function in (_kale_worker_send, _kale_worker_receive, _kale_worker_main,
                             _kale_worker_compile, _kale_worker_child,
                             _kale_worker_use_compiled)
        ) + (
            "\n\nimport atexit, os, socket, sys\n"
            "_kale_worker_main(socket.socket(fileno=int(sys.argv[1])), sys.argv[2:])\n"
            "atexit._run_exitfuncs()\n"  # it ran no step's code: no teardown to wait for
            "os._exit(0)\n"
        )
    except (OSError, TypeError):  # no source to read (e.g. a frozen script)
        return None
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno()), *preload],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # each child has its own
        )
    except OSError:
        ours.close()
        return None
    finally:
        theirs.close()
    # the lock keeps the messages of steps submitted from different threads whole
    return {"process": process, "channel": ours, "lock": threading.Lock()}


def _kale_worker_stop(worker):
    """Close the worker's channel and wait for it to exit: after its last child it
    exits at once, without the interpreter's teardown (about 0.2 s with the
    notebook's libraries loaded, which every run would wait for)."""
    import subprocess

    if worker is None:
        return
    worker["channel"].close()  # the worker exits when its channel closes (and its children end)
    try:
        worker["process"].wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker["process"].kill()


def _kale_worker_send(channel, payload, fds=()):
    """One length-prefixed message (and file descriptors) over the worker channel."""
    import socket
    import struct

    header = struct.pack("!I", len(payload))
    if fds:
        socket.send_fds(channel, [header], list(fds))
    else:
        channel.sendall(header)
    channel.sendall(payload)


def _kale_worker_receive(channel, with_fds=False):
    """The next message (and its file descriptors); ``(None, [])`` at end of channel."""
    import socket
    import struct

    fds = []
    if with_fds:
        header, fds, _, _ = socket.recv_fds(channel, 4, 4)
    else:
        header = channel.recv(4)
    while header and len(header) < 4:
        more = channel.recv(4 - len(header))
        if not more:
            return None, fds
        header += more
    if not header:
        return None, fds
    size = struct.unpack("!I", header)[0]
    payload = bytearray()
    while len(payload) < size:
        chunk = channel.recv(min(1 << 20, size - len(payload)))
        if not chunk:
            return None, fds
        payload += chunk
    return bytes(payload), fds


def _kale_worker_command(full_command):
    """``(component source, executor arguments)`` of kfp.local's command for a
    lightweight component, or None for a command the worker does not know."""
    if (
        len(full_command) >= 4
        and full_command[:2] == ["sh", "-ec"]
        and "kfp.dsl.executor_main" in full_command[2]
        and "ephemeral_component.py" in full_command[2]
    ):
        return full_command[3], list(full_command[4:])
    return None


def _kale_worker_submit(worker, full_command, env_vars):
    """Run one step in a child of the worker: returns its output as a line iterator and
    a function giving its exit code, or None (the caller then starts a process).

    Safe to call from several threads at once: the request travels whole under the
    worker's lock, and the exit code comes back on a socket pair of this submission's
    own, so replies never need to be matched to requests."""
    import json
    import os
    import socket

    parsed = _kale_worker_command(full_command)
    if worker is None or worker.get("broken") or parsed is None:
        return None
    source, arguments = parsed
    request = json.dumps({"source": source, "arguments": arguments, "env": env_vars or {}})
    read_end, write_end = os.pipe()
    reply, theirs = socket.socketpair()
    try:
        with worker["lock"]:
            _kale_worker_send(worker["channel"], request.encode("utf-8"),
                              [write_end, theirs.fileno()])
    except OSError:
        worker["broken"] = True
        os.close(read_end)
        reply.close()
        return None
    finally:  # the worker has its copies now; ours would hide the end of the output
        os.close(write_end)
        theirs.close()
    lines = os.fdopen(read_end, "r", errors="replace", buffering=1)

    def finish():
        """The child's exit code; None if the worker died (the caller runs the step
        in a process of its own, and so do all later steps)."""
        lines.close()
        try:
            message, _ = _kale_worker_receive(reply)
        except OSError:
            message = None
        finally:
            reply.close()
        if message is None:
            worker["broken"] = True
            return None
        return json.loads(message)["status"]

    return lines, finish


def _kale_worker_main(channel, preload):
    """The worker: import ``preload``, then fork one child per request and report
    each child's exit status on the reply channel that came with the request. Exits
    when the launcher closes the channel and its last child has ended.

    Several children run at once (``--jobs``), so the worker never blocks on one: it
    waits in a selector for a new request or a ``SIGCHLD`` (written to a pipe by
    ``signal.set_wakeup_fd``) and reaps the children it started, by pid, without
    blocking. A child keeps none of the worker's descriptors: not the channel, not the
    other children's reply channels (whose end of file tells the launcher the worker
    died), not the wake-up pipe. Before forking it compiles what of the request's
    module it has not compiled yet (:func:`_kale_worker_compile`); the child
    inherits the code.

    Everything is imported with ``_KFP_RUNTIME=true``, as a step's process imports it
    (kfp's command sets it; so does each child): kfp then loads only its runtime,
    so a step's component module gets the ``kfp.dsl`` names it gets on a cluster,
    and the worker is ready about 0.35 s sooner (kfp's authoring side is most of
    its imports)."""
    import importlib
    import json
    import os
    import selectors
    import signal
    import socket
    import sys

    os.environ["_KFP_RUNTIME"] = "true"
    for module in preload:
        try:
            importlib.import_module(module)
        except BaseException:  # noqa: BLE001 - the step imports it (and reports) itself
            pass
    importlib.import_module("kfp.dsl.executor_main")  # what every child runs

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda number, frame: None)  # only to wake the selector
    signal.set_wakeup_fd(wake_write)
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children = {}  # pid -> the reply channel of its request
    compiled = {}  # (first line, text) -> code of a chunk of a component's module
    listening = True
    while listening or children:
        for key, _ in selector.select(timeout=1.0):  # the timeout only guards a lost wake-up
            if key.fileobj is not channel:
                try:
                    while os.read(wake_read, 512):
                        pass
                except BlockingIOError:
                    pass
                continue
            message, fds = _kale_worker_receive(channel, with_fds=True)
            if message is None:  # the launcher is done: finish the children, then exit
                listening = False
                selector.unregister(channel)
                for fd in fds:
                    os.close(fd)
                continue
            if len(fds) != 2:  # not a request of this script's launcher
                for fd in fds:
                    os.close(fd)
                continue
            output, reply = fds[0], socket.socket(fileno=fds[1])
            request, codes = None, None
            try:
                request = json.loads(message)
                codes = _kale_worker_compile(compiled, request["source"])
            except Exception:  # noqa: BLE001 - the child compiles (or fails) as it would have
                pass
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    selector.close()
                    os.close(wake_read)
                    os.close(wake_write)
                    channel.close()
                    reply.close()
                    for other in children.values():
                        other.close()
                    os.dup2(output, 1)
                    os.dup2(output, 2)
                    os.close(output)
                    code = _kale_worker_child(request or json.loads(message), codes)
                except BaseException:  # noqa: BLE001 - anything the step did not catch
                    import traceback

                    traceback.print_exc()
                finally:
                    try:  # as a process exiting normally would
                        import atexit

                        atexit._run_exitfuncs()
                    except BaseException:  # noqa: BLE001
                        pass
                    for stream in (sys.stdout, sys.stderr):
                        try:
                            stream.flush()
                        except (OSError, ValueError):
                            pass
                    os._exit(code)
            os.close(output)
            children[pid] = reply
        for pid in list(children):  # ours only: a preloaded library may have its own
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 1 << 8
            if not done:
                continue
            reply = children.pop(pid)
            try:
                _kale_worker_send(reply, json.dumps(
                    {"status": os.waitstatus_to_exitcode(status)}).encode("utf-8"))
            except OSError:  # the launcher is gone
                pass
            reply.close()


def _kale_worker_compile(cache, source):
    """The code of the component module ``source`` as consecutive chunks of top-level
    statements, each compiled once per worker (``cache``: ``(first line, text) ->
    code``), or None where the module must be compiled whole: the child then loads
    it exactly as kfp does.

    Why: every step's module is kfp's header, the whole in-step runtime (about 1,900
    lines, the same text at the same lines in every step) and, last, the step's own
    function. Compiling it costs about 15 ms in a warm process and twice that in a
    freshly forked child (whose allocations copy the parent's pages), every step,
    although only the last chunk is new. Compiled here, before the fork, a step
    compiles only what no earlier step had; its child executes the chunks' code in
    order into the module kfp creates (:func:`_kale_worker_use_compiled`).

    Why it is exact: a chunk begins at a line that starts, in column 0 and after an
    empty line, a ``def``, ``class`` or decorator (kfp puts an empty line between
    the functions it ships; a decorated function stays whole), so it is a whole
    top-level statement and never a docstring, unless that line is inside a string
    or brackets, which leaves the chunk before it unterminated: that chunk does not
    compile and the module is compiled whole. Each chunk is compiled from the
    file's bytes preceded by as many newlines as lines precede it, so its code
    carries the line numbers (and columns) of the whole file; the child gives every
    code object its file's name. What chunks cannot reproduce is compiled whole: a
    ``from __future__`` import (it changes how everything after it compiles), a
    coding declaration or a carriage return (they change how the file's bytes read,
    and the line count), a chunk whose compile warns or fails (the child's own
    compile shows the warning or the error as before).
    """
    import warnings

    if "\r" in source:
        return None
    lines = source.split("\n")
    starts = [0] + [
        number for number, line in enumerate(lines)
        if number and not lines[number - 1]
        and line.startswith(("def ", "async def ", "class ", "@"))
    ]
    first = "\n".join(lines[: starts[1] if len(starts) > 1 else len(lines)])
    if "__future__" in first or "coding" in "\n".join(lines[:2]):
        return None
    codes = []
    for begin, end in zip(starts, starts[1:] + [len(lines)]):
        text = "\n".join(lines[begin:end]) + ("\n" if end < len(lines) else "")
        code = cache.get((begin, text))
        if code is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    code = compile(b"\n" * begin + text.encode("utf-8"),
                                   "ephemeral_component.py", "exec", dont_inherit=True)
            except Exception:  # noqa: BLE001 - SyntaxError, a warning made an error, ...
                return None
            cache[(begin, text)] = code
        codes.append(code)
    return codes


def _kale_worker_child(request, codes=None):
    """In the forked child: what kfp.local's ``sh -ec`` command does, minus starting
    Python: write the component's source to a file and run kfp's executor on it
    (which loads that file as a module; with ``codes``, the module's code compiled
    by the worker, :func:`_kale_worker_compile`, it executes that code instead of
    compiling the file again)."""
    import os
    import sys
    import tempfile

    os.environ.update(request["env"])
    os.environ["_KFP_RUNTIME"] = "true"
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "ephemeral_component.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(request["source"])
    if codes is not None:
        _kale_worker_use_compiled(path, codes)
    sys.argv = ["executor_main", "--component_module_path", path, *request["arguments"]]
    from kfp.dsl import executor_main

    try:
        executor_main.executor_main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def _kale_worker_use_compiled(path, codes):
    """Make the load of the module file ``path`` execute ``codes`` (its chunks,
    compiled by the worker) instead of compiling the file, once.

    kfp's executor loads the component's file with importlib's ``SourceFileLoader``
    into a fresh module (``spec_from_file_location``, ``module_from_spec``); only
    the loader's ``exec_module`` (compile the file, exec the code in the module's
    namespace) is replaced, for that one path: the first load of it puts the
    loader's own method back and executes the chunks in order in the module's
    namespace, each code object (nested ones too) named after the loaded file, as
    its own compile would have named it, so tracebacks and ``inspect`` show the
    file and its lines. Any other module loads as always; a kfp that loads the file
    another way never calls it and compiles the file itself."""
    import importlib.machinery
    import types

    loader = importlib.machinery.SourceFileLoader
    own = loader.__dict__.get("exec_module")  # None: inherited
    original = loader.exec_module

    def named(code, filename):
        constants = tuple(named(constant, filename) if isinstance(constant, types.CodeType)
                          else constant for constant in code.co_consts)
        return code.replace(co_filename=filename, co_consts=constants)

    def exec_module(self, module):
        if getattr(self, "path", None) != path:
            return original(self, module)
        if own is None:
            del loader.exec_module
        else:
            loader.exec_module = own
        namespace = module.__dict__
        for code in [named(code, self.path) for code in codes]:
            exec(code, namespace)
        return None

    loader.exec_module = exec_module
