"""A ``--local`` run with kfp.local: one progress line per step, then a manifest.
Runs in the script's command line, never inside a step; the steps themselves run in
``worker.py``'s forked processes (or a fresh process each with ``--isolated``).

kfp.local runs a pipeline's tasks one after another, in an order that changes from
run to run, and stops at the first failure; the run replaces its loop by
:func:`_kale_run_dag_concurrently`, which starts each task as soon as the tasks it
depends on have succeeded, at most ``--jobs N`` at a time, in a fixed order, each
through kfp.local's own ``execute_single_task`` (so artifacts, caching and the run
folder stay kfp.local's), and runs every task no failure is upstream of.

A ``--local`` run leaves, next to the outputs kfp.local writes, a manifest
``<runs-dir>/<pipeline>-<timestamp>/kale-run.json`` (format ``kale-local-run/1``)::

    {"format": "kale-local-run/1", "pipeline": ..., "script": ..., "started": ISO time,
     "duration_s": ..., "status": "succeeded" | "failed", "cache": bool,
     "parameters": {name: value},               # every parameter, defaults included
     "steps": {step: {"status": "succeeded" | "cached" | "failed" | "not run",
                      "duration_s": ..., "failure": "kale: step ... failed in ... line N",
                      "warnings": ["step ... changed 'x' in place ...", ...],
                      "outputs": {variable: {"uri": ..., "metadata": {...}}},
                      "inputs": {variable: {"producer": step, "uri": ...}},
                      "parameters": {name: value}, "metrics": {name: number},
                      "report": path of the step's HTML report, or null}}}

``kale_nbconvert.local_runs`` reads it to hand a run's artifacts back to a notebook.
"""


def _kale_check_local_packages(packages):
    """A local run installs nothing: say which required packages are missing here."""
    from importlib import metadata

    missing = []
    for requirement in packages:
        name, _, version = requirement.partition("==")
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def _kale_run_local(build_pipeline, packages, arguments, runs_dir, use_cache=False, script="",
                    preload=(), base_image="", jobs=1):
    """Run every step here with kfp.local's SubprocessRunner, without a venv.

    kfp.local's own log (executor input JSON, coloured banners) is replaced by one
    progress line per step and a closing summary; the steps' own output (prints,
    tracebacks) still streams, prefixed with the step name. ``--cache`` is kfp.local's
    cache: its key hashes the component's command (which embeds the step's cells,
    the shared cells and the runtime), the parameter values and the input artifacts'
    URIs, so a step re-runs exactly when its code, parameters or inputs changed,
    and a re-run step's new outputs make its descendants re-run.

    ``preload`` (None: ``--isolated``) starts the warm worker the steps fork from
    (:func:`_kale_worker_start`); it starts first, so its imports overlap kfp's.
    ``base_image`` is the notebook's image: a step with another is listed as cluster-only.
    ``jobs`` is how many steps may run at once (``--jobs``; 1: one after another).
    """
    import sys

    missing = _kale_check_local_packages(packages)
    if missing:
        print(
            "kale: a local run installs nothing; missing here: " + " ".join(missing)
            + "\n  fix: pip install " + " ".join(missing),
            file=sys.stderr,
        )
        return 1
    worker = None if preload is None else _kale_worker_start(preload)
    try:
        return _kale_run_local_with(worker, build_pipeline, arguments, runs_dir, use_cache, script,
                                    base_image, jobs)
    finally:
        _kale_worker_stop(worker)


def _kale_local_unapplied(pipeline, base_image=""):
    """The step settings kfp.local cannot honour, read from the compiled pipeline, as one
    line ("a: cpu request, timeout, secret 'db-creds'; b: toleration"), or "" if none.
    Env vars, retries and caching kfp.local applies itself; requests, limits, a step's
    own image (one other than ``base_image``, the notebook's) and the Kubernetes platform
    settings are for a cluster only."""
    from google.protobuf import json_format

    spec = json_format.MessageToDict(pipeline.pipeline_spec)
    platform = json_format.MessageToDict(pipeline.platform_spec)
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    kubernetes = platform.get("platforms", {}).get("kubernetes", {}).get(
        "deploymentSpec", {}).get("executors", {})
    images = {name: executor.get("container", {}).get("image") for name, executor in executors.items()}
    names = {
        "activeDeadlineSeconds": "timeout", "secretAsEnv": "secret", "secretAsVolume": "secret volume",
        "configMapAsEnv": "config map", "configMapAsVolume": "config map volume",
        "nodeSelector": "node selector", "tolerations": "toleration",
        "emptyDirMounts": "shm (/dev/shm)", "podMetadata": "pod labels/annotations",
        "pvcMount": "volume",
    }
    steps = []
    for executor in sorted(set(executors) | set(kubernetes)):
        found = []
        resources = executors.get(executor, {}).get("container", {}).get("resources", {})
        for key in sorted(resources):  # resourceCpuLimit (cpuLimit is its old twin)
            if key.startswith("resource"):
                found.append(key[len("resource"):].replace("Cpu", "cpu ").replace("Memory", "memory ").lower())
            elif key == "accelerator":
                found.append("accelerator")
        if executor in images and images[executor] != base_image:
            found.append(f"image {images.get(executor)!r}")
        for key, value in sorted(kubernetes.get(executor, {}).items()):
            label = names.get(key, key)
            if key in ("secretAsEnv", "secretAsVolume"):
                label += " " + ", ".join(sorted({repr(item.get("secretName")) for item in value}))
            elif key in ("configMapAsEnv", "configMapAsVolume"):
                label += " " + ", ".join(sorted({repr(item.get("configMapName")) for item in value}))
            found.append(label)
        if found:
            step = executor[len("exec-"):] if executor.startswith("exec-") else executor
            steps.append(f"{step}: " + ", ".join(found))
    return "; ".join(steps)


def _kale_run_local_with(worker, build_pipeline, arguments, runs_dir, use_cache, script,
                         base_image="", jobs=1):
    """The local run proper (see :func:`_kale_run_local`), steps forked from ``worker``
    where there is one."""
    import datetime
    import os
    import sys
    import time

    from kfp import local

    runs_dir = os.path.abspath(runs_dir)
    os.makedirs(runs_dir, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=runs_dir,
        enable_caching=use_cache,
    )
    pipeline = build_pipeline(local=True)
    tasks = _kale_task_order(pipeline.pipeline_spec)
    state = {"steps": {}, "run": None, "total": len(tasks), "worker": worker, "jobs": jobs}
    print(f"kale: running {pipeline.name} locally: {len(tasks)} steps"
          + (f", up to {jobs} at once" if jobs > 1 and len(tasks) > 1 else "")
          + (", reusing unchanged steps (--cache)" if use_cache else ""), flush=True)
    unapplied = _kale_local_unapplied(pipeline, base_image)
    if unapplied:
        print("kale: not applied locally (cluster-only settings): " + unapplied, flush=True)
    started = time.perf_counter()
    started_at = datetime.datetime.now().isoformat(timespec="seconds")
    restore = _kale_instrument_kfp_local(state)
    error = None
    try:
        pipeline(**arguments)
    except Exception as raised:  # noqa: BLE001 - kfp.local raises RuntimeError for a failed task
        error = raised
    finally:
        restore()
    elapsed = time.perf_counter() - started
    run = state["run"]  # None if no task started (or kfp.local could not be instrumented)
    succeeded = error is None  # kfp.local raises when a task fails
    manifest = _kale_write_manifest(
        run, pipeline, tasks, state["steps"], arguments, use_cache, script, started_at,
        elapsed, succeeded,
    )
    run = run or runs_dir
    shown = _kale_shown_path(run)
    _kale_print_summary(manifest)
    if succeeded:
        cached = sum(step["status"] == "cached" for step in manifest["steps"].values())
        warned = [task for task in tasks if manifest["steps"][task]["warnings"]]
        print(
            f"kale: all {len(tasks)} steps succeeded in {elapsed:.2f} s"
            + (f" ({cached} reused from cache)" if cached else "")
            + (f"\nkale: warning: the run may differ from the notebook: see the warnings of "
               f"{', '.join(warned)} above (also in kale-run.json)" if warned else "")
            + f"\nkale: outputs in {shown}"
            f"\nkale: open them in Python: from kale_nbconvert.local_runs import load_run; "
            f"load_run({run!r})",
            flush=True,
        )
        return 0
    failed = [task for task in tasks if manifest["steps"][task]["status"] == "failed"]
    not_run = [task for task in tasks if manifest["steps"][task]["status"] == "not run"]
    lines = []
    for task in failed:
        lines.append(manifest["steps"][task].get("failure") or f"kale: step {task!r} failed")
    if not failed:
        message = " ".join(str(error).split()) if error else "unknown error"
        lines.append("kale: the local run failed: " + _kale_strip_ansi(message))
    if not_run:
        lines.append("kale: not run: " + ", ".join(not_run))
    done = len(tasks) - len(failed) - len(not_run)
    lines.append(f"kale: run failed after {elapsed:.2f} s ({done} of {len(tasks)} steps "
                 f"succeeded); outputs so far in {shown}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 1


def _kale_cache_function_sources():
    """Make kfp read each function's source once while ``build_pipeline`` makes the
    components; returns a function that undoes it.

    ``dsl.component`` reads the source of the component's function and of every
    function it ships (``additional_funcs``: the whole in-step runtime, about 90
    functions, the same for every step) with ``inspect.getsource``, which tokenizes
    each function anew: about 30 ms per step, every build (a compile, a ``--local`` or
    ``--host`` run, ``kfp dsl compile``, an import), before anything else happens
    (an 18-step notebook's build: 0.81 s, 0.17 s with this). Nothing changes a function or
    its file while the components are made, so kfp gets the text it would have read,
    from the first read (kept by function object, only until the components are
    made). Another kfp without that helper builds as it would."""
    try:
        from kfp.dsl import component_factory

        original = component_factory._get_function_source_definition
    except (ImportError, AttributeError):
        return lambda: None
    sources = {}

    def source_of(function):
        if function not in sources:
            sources[function] = original(function)
        return sources[function]

    component_factory._get_function_source_definition = source_of

    def restore():
        component_factory._get_function_source_definition = original

    return restore


def _kale_strip_ansi(text):
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _kale_task_order(pipeline_spec):
    """The task names of a pipeline spec (or of one DAG component spec) in the order a
    local run starts them (topological, ties in name order)."""
    dag = getattr(pipeline_spec, "root", pipeline_spec).dag.tasks
    order, done = [], set()
    while len(order) < len(dag):
        ready = sorted(
            name for name, task in dag.items()
            if name not in done and set(task.dependent_tasks) <= done
        )
        if not ready:  # a cycle cannot compile; keep going rather than loop
            ready = sorted(set(dag) - done)
        order.append(ready[0])
        done.add(ready[0])
    return order


def _kale_instrument_kfp_local(state):
    """Make kfp.local report through ``state`` instead of its own log; returns a
    function that undoes it.

    kfp.local offers no hook per task, so some of its module attributes are replaced
    for the duration of the run: the logger context, the separator lines and the
    indented print (silenced), the task executor (timed and recorded: status, outputs,
    cache hit), the subprocess runner (output filtered and prefixed) and the DAG loop
    (:func:`_kale_run_dag_concurrently`).

    Tasks may run in several threads at once, so what is per task lives in a
    thread-local (``state["local"].current``), the records and every line printed are
    under ``state["lock"]``, and the replacements are safe to enter concurrently:
    kfp's own logger context and indented print save and restore global state
    around each task, which interleaved tasks would leave wrong after the run.
    """
    import contextlib
    import logging
    import os
    import threading
    import time
    import warnings

    try:
        from kfp.local import logging_utils, subprocess_task_handler
        from kfp.local.orchestrator import dag_orchestrator, task_executor

        originals = (
            logging_utils.local_logger_context,
            logging_utils.print_horizontal_line,
            logging_utils.indented_print,
            task_executor.execute_single_task,
            subprocess_task_handler.run_local_subprocess,
            dag_orchestrator.run_dag,
        )
    except (ImportError, AttributeError):  # another kfp version: keep its own log
        return lambda: None
    state.setdefault("lock", threading.RLock())
    state.setdefault("local", threading.local())
    quiet = {"depth": 0, "previous": None}

    @contextlib.contextmanager
    def quiet_logger_context():
        with state["lock"]:  # counted: concurrent tasks enter and leave in any order
            if quiet["depth"] == 0:
                quiet["previous"] = logging.root.manager.disable
                logging.disable(logging.CRITICAL)  # we report each task ourselves
            quiet["depth"] += 1
        try:
            yield
        finally:
            with state["lock"]:
                quiet["depth"] -= 1
                if quiet["depth"] == 0:
                    logging.disable(quiet["previous"])

    @contextlib.contextmanager
    def unindented_print(*args, **kwargs):
        yield  # kfp would swap builtins.print for every task; we print nothing with it

    def execute_single_task(*args, **kwargs):
        task = kwargs.get("task_name")
        current = {"task": task, "ran": False, "failure": None}
        state["local"].current = current
        with state["lock"]:
            if state["run"] is None and "pipeline_root" in kwargs:
                state["run"] = os.path.join(kwargs["pipeline_root"], kwargs["pipeline_resource_name"])
        began = time.perf_counter()
        outputs, status = originals[3](*args, **kwargs)
        ok = getattr(status, "name", str(status)) == "SUCCESS"
        record = {
            "status": ("succeeded" if current["ran"] else "cached") if ok else "failed",
            "duration_s": round(time.perf_counter() - began, 3),
            "artifacts": {
                key: {"uri": value.uri, "metadata": dict(value.metadata or {})}
                for key, value in (outputs or {}).items() if hasattr(value, "uri")
            },
            "failure": current["failure"],
            "warnings": current.get("warnings", []),
        }
        with state["lock"]:  # [k/n]: k counts the steps finished so far
            state["steps"][task] = record
            _kale_print_progress(task, record, len(state["steps"]), state["total"])
        return outputs, status

    def run_local_subprocess(full_command, env_vars=None):
        state["local"].current["ran"] = True
        return _kale_run_step_process(full_command, env_vars, state)

    def run_dag(*args, **kwargs):
        if args:  # kfp.local calls it by keyword; anything else gets its own loop
            return originals[5](*args, **kwargs)
        return _kale_run_dag_concurrently(originals[5], state["jobs"], kwargs)

    logging_utils.local_logger_context = quiet_logger_context
    logging_utils.print_horizontal_line = lambda: None
    logging_utils.indented_print = unindented_print
    task_executor.execute_single_task = execute_single_task
    subprocess_task_handler.run_local_subprocess = run_local_subprocess
    dag_orchestrator.run_dag = run_dag
    catcher = warnings.catch_warnings()
    catcher.__enter__()
    # Resource limits and display names apply on a cluster; locally they are ignored.
    warnings.filterwarnings("ignore", message=r"Task .*: settings .* have no effect")
    # A step's own image: listed once by _kale_local_unapplied instead.
    warnings.filterwarnings("ignore", message=r"You may be attemping to run a task that uses custom")

    def restore():
        catcher.__exit__(None, None, None)
        (logging_utils.local_logger_context, logging_utils.print_horizontal_line,
         logging_utils.indented_print, task_executor.execute_single_task,
         subprocess_task_handler.run_local_subprocess, dag_orchestrator.run_dag) = originals

    return restore


def _kale_run_dag_concurrently(run_dag, jobs, kwargs):
    """kfp.local's ``dag_orchestrator.run_dag`` (``kwargs`` are its arguments), with each
    task started as soon as every task in its ``dependent_tasks`` has succeeded, at most
    ``jobs`` at a time, in threads that call kfp.local's ``execute_single_task``.

    What kfp.local does stays kfp.local's: the IOStore (filled from this thread only,
    before a dependent task starts), caching, retries, the task folders. A DAG with
    nested DAGs (never a notebook's) goes to ``run_dag`` itself.

    Ready tasks start in ``_kale_task_order`` (topological, ties by name), so the run
    is the same every time: kfp.local's own loop takes the order of a protobuf map,
    which changes from one process to the next, and stops at the first failure, so
    which steps ran before a failure was a matter of chance. Here a failed task's
    descendants never start and every other task runs, whatever ``jobs`` is: a run
    goes as far as it can, and the summary names every failure, not just the first.
    """
    import concurrent.futures

    from kfp.local import io, status
    from kfp.local.orchestrator import task_executor
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

    dag_component_spec = kwargs["dag_component_spec"]
    components = kwargs["components"]
    tasks = dag_component_spec.dag.tasks
    flat = all(
        components[task.component_ref.name].WhichOneof("implementation") == "executor_label"
        and set(task.dependent_tasks) <= set(tasks)
        for task in tasks.values()
    )
    if not flat:
        return run_dag(**kwargs)
    io_store = io.IOStore(parent=kwargs.get("parent_io_store"))
    for key, value in OrchestratorUtils.join_user_inputs_and_defaults(
        dag_arguments=kwargs["dag_arguments"],
        dag_inputs_spec=dag_component_spec.input_definitions,
    ).items():
        io_store.put_parent_input(key, value)
    order = _kale_task_order(dag_component_spec)
    position = {name: index for index, name in enumerate(order)}
    succeeded, failed, started, running = set(), [], set(), {}
    error = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs,
                                               thread_name_prefix="kale-step") as pool:
        while True:
            for name in order if error is None else ():
                if len(running) >= jobs:
                    break
                if name in started or not set(tasks[name].dependent_tasks) <= succeeded:
                    continue
                started.add(name)
                future = pool.submit(
                    task_executor.execute_single_task,
                    task_name=name,
                    task_spec=tasks[name],
                    pipeline_resource_name=kwargs["pipeline_resource_name"],
                    components=components,
                    executors=kwargs["executors"],
                    io_store=io_store,
                    pipeline_root=kwargs["pipeline_root"],
                    runner=kwargs["runner"],
                    unique_pipeline_id=kwargs["unique_pipeline_id"],
                    fail_stack=kwargs["fail_stack"],
                )
                running[future] = name
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                try:
                    outputs, task_status = future.result()
                except BaseException as raised:  # noqa: BLE001 - re-raised once all have ended
                    error = error or raised
                    continue
                if task_status == status.Status.SUCCESS:
                    for key, output in outputs.items():
                        io_store.put_task_output(name, key, output)
                    succeeded.add(name)
                elif task_status == status.Status.FAILURE:
                    failed.append(name)
                else:
                    error = error or ValueError(f"Got unknown task status: {task_status.name}")
    if error is not None:
        raise error
    if failed:
        kwargs["fail_stack"].append(min(failed, key=position.get))
        return {}, status.Status.FAILURE
    outputs = OrchestratorUtils.get_dag_outputs(
        dag_outputs_spec=dag_component_spec.dag.outputs, io_store=io_store)
    return outputs, status.Status.SUCCESS


def _kale_run_step_process(full_command, env_vars, state):
    """Run one step's process; stream its output minus kfp's executor log.

    kfp's executor logs its progress to stdout as ``[KFP Executor ...]`` lines, one
    of them followed by the executor input as indented JSON that ends with a ``}``
    line; the rest (including the step's own logging, which gets the same prefix
    from the executor's logging setup) is the step's output, shown as
    ``  step | line``. The runtime's
    ``kale: step ... failed ...`` line is kept for the closing summary. With the warm
    worker (``state["worker"]``) the step runs in a child forked from it instead.
    Called in the thread that runs the task (``state["local"].current``).
    """
    import os
    import subprocess

    forked = _kale_worker_submit(state.get("worker"), full_command, env_vars)
    if forked is not None:
        lines, finish = forked
        _kale_stream_step_output(lines, state)
        code = finish()
        if code is not None:
            return code
    env = {**os.environ, **(env_vars or {})}
    with subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1, env=env, errors="replace") as process:
        _kale_stream_step_output(process.stdout, state)
        return process.wait()


def _kale_stream_step_output(lines, state):
    """Show a step's output lines as ``  step | line``, minus kfp's executor log.

    Each line is written whole under ``state["lock"]``, so the lines of steps running
    at once interleave line by line, never within a line."""
    import sys

    current = state["local"].current
    lock = state["lock"]
    prefix = f"  {current['task']} | "
    in_json = False
    for line in lines:
        if in_json:
            in_json = line.rstrip("\n") != "}"
            continue
        if line.startswith("[KFP Executor ") and any(
            message in line for message in (
                "]: Looking for component", "]: Loading KFP component",
                "]: --component_module_path is not specified", "]: Got executor_input:",
                "]: Wrote executor output file", "]: Did not write output file",
            )
        ):  # only these: the step's own logging.info() has the same prefix
            in_json = line.rstrip().endswith("Got executor_input:")
            continue
        if line.startswith("kale: step ") and " failed" in line:
            current["failure"] = line.strip()
        if line.startswith("kale: warning: "):  # the runtime's divergence warnings
            current.setdefault("warnings", []).append(line.strip()[len("kale: warning: "):])
        with lock:
            sys.stdout.write(prefix + line if line.strip() else line)
            sys.stdout.flush()


def _kale_print_progress(task, record, number, total):
    """``[2/4] train   succeeded   1.20 s   model (sklearn...LogisticRegression, 1.2 KB)``."""
    import sys

    outputs = []
    for key, artifact in sorted(record["artifacts"].items()):
        metadata = artifact["metadata"]
        if key == "report":  # the summary at the end lists it
            continue
        if key == "metrics" or not key.endswith("_out"):
            values = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in sorted(metadata.items()) if k != "display_name")
            outputs.append(f"{key}: {values}" if values else key)
            continue
        outputs.append(_kale_artifact_text(key[:-4], artifact))
    width = len(str(total))
    line = (f"[{number:>{width}}/{total}] {task:<16} {record['status']:<9} "
            f"{record['duration_s']:6.2f} s   " + "; ".join(outputs))
    sys.stdout.write(line.rstrip() + "\n")  # one write: whole among concurrent steps' lines
    sys.stdout.flush()


def _kale_artifact_text(variable, artifact):
    """``model (LogisticRegression, 1.2 KB)``: a value handed on, as the progress line
    and the closing summary show it (its type and size from the marshaller's metadata)."""
    metadata = artifact.get("metadata") or {}
    size = metadata.get("size_bytes")
    if size is None:  # marshal.py's: the command line ships it too
        size = _kale_path_size(artifact["uri"])
    kind = str(metadata.get("python_type", "")).rsplit(".", 1)[-1]
    return f"{variable} ({kind + ', ' if kind else ''}{_kale_format_size(size)})"


def _kale_shown_path(path):
    """``path`` relative to the current folder if it is inside it, else absolute."""
    import os

    try:
        return path if os.path.relpath(path).startswith("..") else os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path


def _kale_print_summary(manifest):
    """The closing table: each step's status, duration, inputs and outputs (type and
    size, as the progress lines show them) and the path of its report."""
    def cut(text, width=44):
        return text if len(text) <= width else text[: width - 3] + "..."

    steps = manifest["steps"]
    rows = [("step", "status", "time", "inputs", "outputs", "report")]
    for name, step in steps.items():
        inputs = [
            _kale_artifact_text(variable, steps.get(source["producer"], {}).get("outputs", {})
                                .get(variable) or source)
            for variable, source in sorted(step["inputs"].items())
        ]
        outputs = [_kale_artifact_text(variable, artifact)
                   for variable, artifact in sorted(step["outputs"].items())]
        outputs += [f"{key}={value:g}" for key, value in sorted(step["metrics"].items())]
        seconds = step.get("duration_s")
        rows.append((
            name, step["status"], "" if seconds is None else f"{seconds:.2f} s",
            cut(", ".join(inputs)) or "-", cut(", ".join(outputs)) or "-",
            _kale_shown_path(step["report"]) if step.get("report") else "-",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    print("kale: summary", flush=True)
    for row in rows:
        print("  " + "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths))
              + "  " + row[-1], flush=True)


def _kale_report_path(run, task, record):
    """Where the step's report is (None: it has none): its ``report`` artifact, a file
    kfp.local names ``<run>/<step>/report``, given a ``report.html`` twin (a hard link)
    that a browser opens as a page. A failed step's artifact is not in its record, but
    its report was written all the same."""
    import os

    path = record.get("artifacts", {}).get("report", {}).get("uri")
    if path is None and run:
        path = os.path.join(run, task, "report")
    if not path or not os.path.isfile(path):
        return None
    page = path + ".html"
    try:
        if not os.path.exists(page):
            os.link(path, page)
        return page
    except OSError:  # no hard links here (some file systems): the file itself
        return path


def _kale_format_size(size):
    size = float(size or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _kale_write_manifest(run, pipeline, tasks, records, arguments, use_cache, script,
                         started_at, elapsed, succeeded):
    """Write ``kale-run.json`` (format in this module's docstring) into the run folder
    ``run`` (if known) and return it: what each step got and produced, for the summary
    and for ``kale_nbconvert.local_runs``."""
    import json
    import os

    dag = pipeline.pipeline_spec.root.dag.tasks
    steps = {}
    for task in tasks:
        record = records.get(task, {"status": "not run", "artifacts": {}})
        spec = dag[task]
        outputs, metrics = {}, {}
        for key, artifact in record["artifacts"].items():
            if key.endswith("_out"):
                outputs[_kale_artifact_variable(key, artifact["uri"])] = artifact
            elif key != "report":
                metrics.update({k: v for k, v in artifact["metadata"].items()
                                if isinstance(v, (int, float))})
        inputs = {}
        for argument, source in spec.inputs.artifacts.items():
            producer = source.task_output_artifact.producer_task
            key = source.task_output_artifact.output_artifact_key
            artifact = records.get(producer, {}).get("artifacts", {}).get(key)
            if artifact:
                variable = _kale_artifact_variable(key, artifact["uri"])
                inputs[variable] = {"producer": producer, "uri": artifact["uri"]}
        step_parameters = {
            name: arguments.get(source.component_input_parameter)
            for name, source in spec.inputs.parameters.items()
            if source.component_input_parameter
        }
        steps[task] = {
            "status": record["status"],
            "duration_s": record.get("duration_s"),
            "failure": record.get("failure"),
            "warnings": record.get("warnings", []),
            "outputs": outputs,
            "inputs": inputs,
            "parameters": step_parameters,
            "metrics": metrics,
            "report": _kale_report_path(run, task, record),
        }
    manifest = {
        "format": "kale-local-run/1",
        "pipeline": pipeline.name,
        "script": os.path.abspath(script) if script else "",
        "started": started_at,
        "duration_s": round(elapsed, 3),
        "status": "succeeded" if succeeded else "failed",
        "cache": use_cache,
        "parameters": arguments,
        "steps": steps,
    }
    if run:
        os.makedirs(run, exist_ok=True)  # kfp.local makes none when every step is cached
        with open(os.path.join(run, "kale-run.json"), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, default=repr)
    return manifest


def _kale_artifact_variable(key, uri):
    """The notebook variable an output artifact holds (its ``kale.json`` says)."""
    import json
    import os

    try:
        with open(os.path.join(uri, "kale.json"), encoding="utf-8") as handle:
            return json.load(handle)["variable"]
    except (OSError, ValueError, KeyError, TypeError):
        return key[:-4] if key.endswith("_out") else key
