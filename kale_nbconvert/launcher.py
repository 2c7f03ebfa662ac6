"""The generated script's command line: compile to YAML, run here, or run on a cluster.

Embedded verbatim in every generated script (which must not need this project), so
everything here is top-level functions prefixed ``_kale_`` that import what they use.

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
                      "parameters": {name: value}, "metrics": {name: number}}}}

``kale_nbconvert.local_runs`` reads it to hand a run's artifacts back to a notebook.
"""


def _kale_main(build_pipeline, parameters, packages, script, argv=None,
               pipeline_name="", experiment="", host="", preload=()):
    """``python pipeline.py [--local [--cache] | --host [URL]] [--param NAME=VALUE ...]``.

    ``pipeline_name``, ``experiment`` and ``host`` are the notebook's
    ``kubeflow_notebook`` metadata: defaults that the flags override. ``preload`` are
    the installed modules the notebook imports, which a ``--local`` run imports once
    in its warm worker.
    """
    import argparse
    import os
    import sys

    folder = os.path.dirname(os.path.abspath(script))
    stem = os.path.splitext(os.path.abspath(script))[0]
    name = os.path.basename(script)
    parser = argparse.ArgumentParser(
        prog=name,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Your notebook as a Kubeflow pipeline. With no options this compiles it to\n"
            "YAML (upload it in the Kubeflow UI); --local runs every step on this\n"
            "machine; --host runs it on a Kubeflow cluster and prints the run's URL."
        ),
        epilog=(
            "examples:\n"
            f"  python {name}                          write {os.path.basename(stem)}.yaml\n"
            f"  python {name} --local                  run here, outputs in kale-local-runs/ beside {name}\n"
            f"  python {name} --local --cache          re-run only the steps you changed\n"
            f"  python {name} --host http://localhost:8080 --experiment tests\n"
            "\n"
            "authentication (--host): a token (--token, or $KF_PIPELINES_TOKEN), cookies\n"
            "(--cookies, or $KF_PIPELINES_COOKIES), or a service account token file\n"
            "(--sa-token-path, or $KF_PIPELINES_SA_TOKEN_PATH); kfp's own variables\n"
            "KF_PIPELINES_ENDPOINT, KF_PIPELINES_UI_ENDPOINT and KF_PIPELINES_IAP_OAUTH2_*\n"
            "work too. Outputs of a local run open in Python with\n"
            "  from kale_nbconvert.local_runs import load_run; load_run().outputs('STEP')"
        ),
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a pipeline parameter (repeatable; local and cluster runs): " + (", ".join(
            f"{pname} ({type_name}, default {default!r})"
            for pname, (type_name, default) in parameters.items()
        ) or "this pipeline has none"),
    )
    parser.add_argument(
        "--output",
        default=f"{stem}.yaml",
        metavar="FILE",
        help="where to write the compiled pipeline (default: %(default)s)",
    )
    local_group = parser.add_argument_group("run on this machine")
    local_group.add_argument(
        "--local",
        action="store_true",
        help="run every step here with kfp.local: no cluster, nothing is installed "
        "(the packages the steps import must already be installed)",
    )
    local_group.add_argument(
        "--cache",
        action="store_true",
        help="with --local: reuse the results of steps whose code, inputs and "
        "parameters did not change since an earlier --cache run",
    )
    local_group.add_argument(
        "--isolated",
        action="store_true",
        help="with --local: start every step in a fresh Python process, as a cluster "
        "does (slower; by default steps fork from one process that has imported the "
        "notebook's libraries once)",
    )
    local_group.add_argument(
        "--allow-divergence",
        action="store_true",
        help="with --local: when a step changed an input in place that later steps read "
        "(a change the analysis did not see, so the pipeline would differ from the "
        "notebook), warn instead of failing the run (a cluster run only warns)",
    )
    local_group.add_argument(
        "--check-limit",
        metavar="SIZE",
        help="with --local: the largest input (as saved: 512M, 8G) a step hashes to check "
        "it for in-place changes; bigger ones are skipped with a note (default 4G; 0: "
        "none; big numpy arrays and pandas frames are checked without hashing, at any size)",
    )
    local_group.add_argument(
        "--runs-dir",
        default=os.path.join(folder, "kale-local-runs"),
        metavar="DIR",
        help="where --local keeps its runs, one folder each (default: %(default)s)",
    )
    cluster = parser.add_argument_group("run on a Kubeflow cluster")
    cluster.add_argument(
        "--host",
        nargs="?",
        const=host,  # "" (no URL anywhere) still means a cluster run: kfp finds the host
        metavar="URL",
        help="upload the pipeline to the Kubeflow Pipelines API at URL (a new version "
        "if it exists) and start a run; without URL: "
        + (f"{host} (from the notebook)" if host else
           "$KF_PIPELINES_ENDPOINT, else the in-cluster service"),
    )
    cluster.add_argument(
        "--experiment",
        default=experiment or "Default",
        metavar="NAME",
        help="experiment of the run (default: %(default)s)",
    )
    cluster.add_argument("--run-name", metavar="NAME",
                         help="name of the run (default: pipeline name and time)")
    cluster.add_argument(
        "--pipeline-name",
        default=pipeline_name,
        metavar="NAME",
        help="name of the pipeline on the cluster (default: %(default)s)",
    )
    cluster.add_argument("--namespace", metavar="NS",
                         help="Kubernetes namespace of the experiment (multi-user Kubeflow)")
    cluster.add_argument("--token", default=os.environ.get("KF_PIPELINES_TOKEN"),
                         help="bearer token for the API (default: $KF_PIPELINES_TOKEN)")
    cluster.add_argument("--cookies", default=os.environ.get("KF_PIPELINES_COOKIES"),
                         help='cookies for the API, e.g. "authservice_session=..." '
                         "(default: $KF_PIPELINES_COOKIES)")
    cluster.add_argument("--sa-token-path", metavar="FILE",
                         help="service account token file, as mounted in Kubeflow "
                         "notebook pods (default: $KF_PIPELINES_SA_TOKEN_PATH)")
    cluster.add_argument("--ssl-ca-cert", metavar="FILE",
                         help="CA certificate bundle of a cluster with its own certificate "
                         "authority")
    cluster.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                         help="give up on a host that does not answer within this time "
                         "(default: %(default)s)")
    cluster.add_argument("--wait", action="store_true",
                         help="follow the run to its end, one line per step as its status "
                         "changes; exit with the run's outcome (Ctrl-C stops following, "
                         "not the run)")
    cluster.add_argument("--poll", type=float, default=5.0, metavar="SECONDS",
                         help="with --wait: seconds between status checks (default: %(default)s)")
    args = parser.parse_args(argv)
    cluster_run = args.host is not None
    if args.local and cluster_run:
        parser.error("--local and --host exclude each other: run here or on a cluster")
    if args.cache and not args.local:
        parser.error("--cache applies to --local runs (a cluster caches by itself)")
    if args.wait and not cluster_run:
        parser.error("--wait follows a cluster run: use it with --host")
    if args.isolated and not args.local:
        parser.error("--isolated applies to --local runs (a cluster always isolates steps)")
    if (args.allow_divergence or args.check_limit is not None) and not args.local:
        parser.error("--allow-divergence and --check-limit apply to --local runs")
    try:
        check_limit = None if args.check_limit is None else _kale_parse_size(args.check_limit)
    except ValueError:
        parser.error(f"--check-limit {args.check_limit!r}: write a size such as 512M or 8G")
    try:
        arguments = _kale_parse_params(args.param, parameters)
    except ValueError as error:
        parser.error(str(error))
    if args.local:
        # what a step does with an unseen in-place change (the runtime's check); set
        # before the warm worker starts, so every step inherits it
        os.environ["KALE_NBCONVERT_DIVERGENCE"] = "warn" if args.allow_divergence else "fail"
        if check_limit is not None:
            os.environ["KALE_NBCONVERT_CHECK_LIMIT"] = str(check_limit)
        defaults = {pname: default for pname, (_, default) in parameters.items()}
        return _kale_run_local(
            build_pipeline, packages, {**defaults, **arguments}, args.runs_dir,
            use_cache=args.cache, script=script, preload=None if args.isolated else preload,
        )
    from kfp import compiler

    if cluster_run:
        pipeline = build_pipeline()
        compiler.Compiler().compile(pipeline, args.output)
        return _kale_submit(args, arguments, _kale_task_order(pipeline.pipeline_spec))
    compiler.Compiler().compile(build_pipeline(), args.output, pipeline_parameters=arguments or None)
    print(f"Pipeline compiled to {args.output}", file=sys.stderr)
    return 0


def _kale_parse_size(text):
    """``"512M"``, ``"8G"``, ``"4GiB"``, ``"1000"`` -> bytes (binary units)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ValueError(text)
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " "))


def _kale_parse_params(pairs, parameters):
    """``["n=3", ...]`` -> ``{"n": 3}``, typed as the parameter's declared type."""
    import json

    arguments = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: write it as NAME=VALUE")
        if name not in parameters:
            import difflib

            known = ", ".join(parameters) or "none"
            close = difflib.get_close_matches(name, list(parameters), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"--param {name!r}: no such pipeline parameter ({hint}known: {known})"
            )
        type_name = parameters[name][0]
        try:
            if type_name == "str":
                value = text
            elif type_name == "bool":
                lowered = text.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = lowered in ("true", "1", "yes")
            elif type_name == "int":
                value = int(text)
            elif type_name == "float":
                value = float(text)
            else:
                value = json.loads(text)
                if type(value).__name__ != type_name:
                    raise ValueError
        except ValueError:
            raise ValueError(
                f"--param {name}={text!r}: not a valid {type_name}"
            ) from None
        arguments[name] = value
    return arguments


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
                    preload=()):
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
        return _kale_run_local_with(worker, build_pipeline, arguments, runs_dir, use_cache, script)
    finally:
        _kale_worker_stop(worker)


def _kale_run_local_with(worker, build_pipeline, arguments, runs_dir, use_cache, script):
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
    state = {"steps": {}, "current": None, "run": None, "total": len(tasks), "worker": worker}
    print(f"kale: running {pipeline.name} locally: {len(tasks)} steps"
          + (", reusing unchanged steps (--cache)" if use_cache else ""), flush=True)
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
    try:
        shown = run if os.path.relpath(run).startswith("..") else os.path.relpath(run)
    except ValueError:  # another drive (Windows)
        shown = run
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


def _kale_strip_ansi(text):
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _kale_task_order(pipeline_spec):
    """The pipeline's task names in an order kfp.local may run them (topological,
    ties in name order)."""
    dag = pipeline_spec.root.dag.tasks
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

    kfp.local offers no hook per task, so four of its module attributes are replaced
    for the duration of the run: the logger context and the separator lines
    (silenced), the task executor (timed and recorded: status, outputs, cache hit)
    and the subprocess runner (output filtered and prefixed).
    """
    import contextlib
    import logging
    import os
    import time
    import warnings

    try:
        from kfp.local import logging_utils, subprocess_task_handler
        from kfp.local.orchestrator import task_executor

        originals = (
            logging_utils.local_logger_context,
            logging_utils.print_horizontal_line,
            task_executor.execute_single_task,
            subprocess_task_handler.run_local_subprocess,
        )
    except (ImportError, AttributeError):  # another kfp version: keep its own log
        return lambda: None

    @contextlib.contextmanager
    def quiet_logger_context():
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)  # we report each task ourselves
        try:
            yield
        finally:
            logging.disable(previous)

    def execute_single_task(*args, **kwargs):
        task = kwargs.get("task_name")
        state["current"] = {"task": task, "ran": False, "failure": None}
        if state["run"] is None and "pipeline_root" in kwargs:
            state["run"] = os.path.join(kwargs["pipeline_root"], kwargs["pipeline_resource_name"])
        began = time.perf_counter()
        outputs, status = originals[2](*args, **kwargs)
        ok = getattr(status, "name", str(status)) == "SUCCESS"
        record = {
            "status": ("succeeded" if state["current"]["ran"] else "cached") if ok else "failed",
            "duration_s": round(time.perf_counter() - began, 3),
            "artifacts": {
                key: {"uri": value.uri, "metadata": dict(value.metadata or {})}
                for key, value in (outputs or {}).items() if hasattr(value, "uri")
            },
            "failure": state["current"]["failure"],
            "warnings": state["current"].get("warnings", []),
        }
        state["steps"][task] = record
        _kale_print_progress(task, record, len(state["steps"]), state["total"])
        return outputs, status

    def run_local_subprocess(full_command, env_vars=None):
        state["current"]["ran"] = True
        return _kale_run_step_process(full_command, env_vars, state)

    logging_utils.local_logger_context = quiet_logger_context
    logging_utils.print_horizontal_line = lambda: None
    task_executor.execute_single_task = execute_single_task
    subprocess_task_handler.run_local_subprocess = run_local_subprocess
    catcher = warnings.catch_warnings()
    catcher.__enter__()
    # Resource limits and display names apply on a cluster; locally they are ignored.
    warnings.filterwarnings("ignore", message=r"Task .*: settings .* have no effect")

    def restore():
        catcher.__exit__(None, None, None)
        (logging_utils.local_logger_context, logging_utils.print_horizontal_line,
         task_executor.execute_single_task, subprocess_task_handler.run_local_subprocess) = originals

    return restore


def _kale_run_step_process(full_command, env_vars, state):
    """Run one step's process; stream its output minus kfp's executor log.

    kfp's executor logs its progress to stdout as ``[KFP Executor ...]`` lines, one
    of them followed by the executor input as indented JSON that ends with a ``}``
    line; the rest (including the step's own logging, which gets the same prefix
    from the executor's logging setup) is the step's output, shown as
    ``  step | line``. The runtime's
    ``kale: step ... failed ...`` line is kept for the closing summary. With the warm
    worker (``state["worker"]``) the step runs in a child forked from it instead.
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
    """Show a step's output lines as ``  step | line``, minus kfp's executor log."""
    import sys

    prefix = f"  {state['current']['task']} | "
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
            state["current"]["failure"] = line.strip()
        if line.startswith("kale: warning: "):  # the runtime's divergence warnings
            state["current"].setdefault("warnings", []).append(line.strip()[len("kale: warning: "):])
        sys.stdout.write(prefix + line if line.strip() else line)
        sys.stdout.flush()


def _kale_print_progress(task, record, number, total):
    """``[2/4] train   succeeded   1.20 s   model (sklearn...LogisticRegression, 1.2 KB)``."""
    import sys

    outputs = []
    for key, artifact in sorted(record["artifacts"].items()):
        metadata = artifact["metadata"]
        if key == "metrics" or not key.endswith("_out"):
            values = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in sorted(metadata.items()) if k != "display_name")
            outputs.append(f"{key}: {values}" if values else key)
            continue
        size = metadata.get("size_bytes")
        if size is None:  # the runtime's, embedded beside this launcher in the script
            size = _kale_path_size(artifact["uri"])  # noqa: F821
        kind = str(metadata.get("python_type", "")).rsplit(".", 1)[-1]
        outputs.append(f"{key[:-4]} ({kind + ', ' if kind else ''}{_kale_format_size(size)})")
    width = len(str(total))
    line = (f"[{number:>{width}}/{total}] {task:<16} {record['status']:<9} "
            f"{record['duration_s']:6.2f} s   " + "; ".join(outputs))
    print(line.rstrip(), flush=True, file=sys.stdout)


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
            else:
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


def _kale_submit(args, arguments, tasks=()):
    """Upload the compiled pipeline (a new version if one of that name exists),
    start a run of that version in the experiment, print the run's URL; with
    ``--wait``, follow the run (``tasks``: the pipeline's steps) to its end."""
    import contextlib
    import datetime
    import io
    import os
    import sys
    import warnings

    host = args.host or None
    shown_host = host or os.environ.get("KF_PIPELINES_ENDPOINT") or "the in-cluster Kubeflow Pipelines"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H-%M-%S")
    name = args.pipeline_name
    try:
        # kfp prints its own links and warns about its version; we print one summary.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            client = _kale_kfp_client(host, args)
            pipeline_id = client.get_pipeline_id(name)
            if pipeline_id is None:
                pipeline = client.upload_pipeline(args.output, pipeline_name=name)
                pipeline_id = pipeline.pipeline_id
                versions = client.list_pipeline_versions(
                    pipeline_id, page_size=1, sort_by="created_at desc"
                ).pipeline_versions or []
                if not versions:
                    raise RuntimeError(f"the upload of {name!r} created no pipeline version")
                version = versions[0]
                what = "new pipeline"
            else:
                version = client.upload_pipeline_version(
                    args.output, pipeline_version_name=f"{name} {stamp}", pipeline_id=pipeline_id
                )
                what = "new version of"
            experiment = client.create_experiment(args.experiment, namespace=args.namespace)
            run = client.run_pipeline(
                experiment_id=experiment.experiment_id,
                job_name=args.run_name or f"{name} {stamp}",
                params=arguments,
                pipeline_id=pipeline_id,
                version_id=version.pipeline_version_id,
            )
    except Exception as error:  # noqa: BLE001 - one clear line instead of a urllib3 traceback
        print(f"kale: {_kale_cluster_error(error, shown_host)}", file=sys.stderr)
        return 1
    ui = (os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host or "").rstrip("/")
    if ui and not ui.startswith(("http://", "https://")):
        ui = "https://" + ui
    print(f"kale: uploaded {what} {name!r}: version {version.display_name!r} "
          f"({version.pipeline_version_id})")
    print(f"kale: started run {run.display_name!r} in experiment {args.experiment!r}")
    url = f"{ui or '/pipeline'}/#/runs/details/{run.run_id}"
    print(f"kale: run URL: {url}", flush=True)
    if not args.wait:
        return 0
    return _kale_follow_run(client, run.run_id, list(tasks), args.poll, url, shown_host)


def _kale_follow_run(client, run_id, tasks, poll, url, host):
    """Print each step's status as it changes, until the run ends; the exit code is
    the run's outcome. Ctrl-C stops following; the run goes on on the cluster."""
    import sys
    import time

    final = {"SUCCEEDED": 0, "FAILED": 1, "CANCELED": 1, "SKIPPED": 0}
    shown, started = {}, time.monotonic()
    try:
        while True:
            try:
                run = client.get_run(run_id)
            except Exception as error:  # noqa: BLE001 - one line, then keep the exit code honest
                print(f"kale: {_kale_cluster_error(error, host)}", file=sys.stderr)
                return 1
            for task, (state, seconds, message) in _kale_run_tasks(run, tasks).items():
                if shown.get(task) == state:
                    continue
                shown[task] = state
                record = {"status": state.lower(), "duration_s": seconds, "artifacts": {}}
                _kale_print_progress(task, record, tasks.index(task) + 1, len(tasks))
                if message:
                    print(f"  {task} | {message}", flush=True)
            state = str(getattr(run, "state", "") or "")
            if state in final:
                elapsed = time.monotonic() - started
                failed = [task for task, value in shown.items() if value == "FAILED"]
                if final[state] == 0:
                    print(f"kale: run succeeded after {elapsed:.0f} s of following: {url}", flush=True)
                else:
                    what = f"step {failed[0]!r} failed" if failed else f"the run ended {state}"
                    error = getattr(getattr(run, "error", None), "message", None)
                    print(f"kale: {what}" + (f": {error}" if error else "")
                          + f"; logs in the KFP UI: {url}", file=sys.stderr, flush=True)
                return final[state]
            time.sleep(poll)
    except KeyboardInterrupt:
        print(f"\nkale: stopped following; the run goes on: {url}", file=sys.stderr, flush=True)
        return 130


def _kale_run_tasks(run, tasks):
    """``{step: (state, seconds, error message)}`` of the run's tasks that are steps of
    this pipeline (KFP also lists its driver and DAG tasks), in pipeline order."""
    import datetime

    details = getattr(getattr(run, "run_details", None), "task_details", None) or []
    found = {}
    for detail in details:
        name = getattr(detail, "display_name", None)
        if name not in tasks:
            continue
        start, end = getattr(detail, "start_time", None), getattr(detail, "end_time", None)
        seconds = 0.0
        if isinstance(start, datetime.datetime) and isinstance(end, datetime.datetime):
            seconds = max(0.0, (end - start).total_seconds())
        error = getattr(getattr(detail, "error", None), "message", None) or ""
        found[name] = (str(getattr(detail, "state", "") or "PENDING"), seconds, error)
    return {task: found[task] for task in tasks if task in found}


def _kale_kfp_client(host, args):
    """``kfp.Client`` with the chosen authentication, failing at once if the host
    does not answer (kfp's own health check retries five times, 5 s apart, and logs
    each traceback)."""
    import kfp

    timeout = float(getattr(args, "connect_timeout", 10.0) or 10.0)

    class Client(kfp.Client):
        def get_kfp_healthz(self, sleep_duration=5):
            import urllib3

            # Every API of the client shares one REST client: bound its connects (and
            # do not retry them), so a host that drops packets fails in seconds, not
            # after the operating system's minutes.
            rest = self._healthz_api.api_client.rest_client
            rest.pool_manager.connection_pool_kw["retries"] = urllib3.Retry(total=0, read=False)
            request = rest.request

            def bounded(*args, _request_timeout=None, **kwargs):
                return request(*args, _request_timeout=_request_timeout or (timeout, max(timeout, 60.0)),
                               **kwargs)

            rest.request = bounded
            return self._healthz_api.healthz_service_get_healthz()

    credentials = None
    if args.sa_token_path:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(path=args.sa_token_path)
    options = {"namespace": args.namespace} if args.namespace else {}
    return Client(host=host, existing_token=args.token or None, cookies=args.cookies or None,
                  credentials=credentials, ssl_ca_cert=getattr(args, "ssl_ca_cert", None),
                  **options)


def _kale_cluster_error(error, host):
    """One line saying why talking to the cluster failed, and what to try."""
    import re

    try:
        from urllib3.exceptions import HTTPError as Urllib3Error
        from urllib3.exceptions import MaxRetryError
    except ImportError:  # pragma: no cover - kfp depends on urllib3
        Urllib3Error = MaxRetryError = ()
    status = getattr(error, "status", None)
    if isinstance(error, MaxRetryError):
        reason = str(error.reason or error)
        reason = re.sub(r"<[^>]*>:?\s*|^\w+\(host=[^)]*\):\s*", "", reason).strip()
        return f"cannot reach Kubeflow Pipelines at {host}: {reason}. Check the URL (--host) and that the server is up."
    if isinstance(error, (Urllib3Error, ConnectionError, OSError)) and not status:
        return f"cannot reach Kubeflow Pipelines at {host}: {error}"
    if isinstance(status, int):
        reason = getattr(error, "reason", "") or ""
        if status in (401, 403):
            return (f"{host} refused the request (HTTP {status} {reason}): authenticate with "
                    "--token, --cookies or --sa-token-path (see --help)")
        if status == 404:
            return (f"{host} has no Kubeflow Pipelines v2 API (HTTP 404 {reason}); "
                    "give the URL of the pipelines endpoint, e.g. http://localhost:8080")
        body = " ".join(str(getattr(error, "body", "") or "").split())[:300]
        return f"{host} answered HTTP {status} {reason}" + (f": {body}" if body else "")
    return f"submitting to {host} failed: {type(error).__name__}: {' '.join(str(error).split())}"


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

    if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return None
    import inspect

    try:  # the worker's own functions, from this script: it needs nothing else
        code = "\n\n".join(
            inspect.getsource(function)
            for function in (_kale_worker_send, _kale_worker_receive, _kale_worker_main,
                             _kale_worker_child)
        ) + (
            "\n\nimport socket, sys\n"
            "_kale_worker_main(socket.socket(fileno=int(sys.argv[1])), sys.argv[2:])\n"
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
    return {"process": process, "channel": ours}


def _kale_worker_stop(worker):
    import subprocess

    if worker is None:
        return
    worker["channel"].close()  # the worker exits when its channel closes
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
    a function giving its exit code, or None (the caller then starts a process)."""
    import json
    import os

    parsed = _kale_worker_command(full_command)
    if worker is None or worker.get("broken") or parsed is None:
        return None
    source, arguments = parsed
    request = json.dumps({"source": source, "arguments": arguments, "env": env_vars or {}})
    read_end, write_end = os.pipe()
    try:
        _kale_worker_send(worker["channel"], request.encode("utf-8"), [write_end])
    except OSError:
        worker["broken"] = True
        os.close(read_end)
        return None
    finally:
        os.close(write_end)
    lines = os.fdopen(read_end, "r", errors="replace", buffering=1)

    def finish():
        """The child's exit code; None if the worker died (the caller runs the step
        in a process of its own, and so do all later steps)."""
        lines.close()
        try:
            reply, _ = _kale_worker_receive(worker["channel"])
        except OSError:
            reply = None
        if reply is None:
            worker["broken"] = True
            return None
        return json.loads(reply)["status"]

    return lines, finish


def _kale_worker_main(channel, preload):
    """The worker: import ``preload``, then fork one child per request and report
    each child's exit status. Exits when the launcher closes the channel."""
    import importlib
    import json
    import os
    import sys

    for module in preload:
        try:
            importlib.import_module(module)
        except BaseException:  # noqa: BLE001 - the step imports it (and reports) itself
            pass
    importlib.import_module("kfp.dsl.executor_main")  # what every child runs

    while True:
        message, fds = _kale_worker_receive(channel, with_fds=True)
        if message is None:
            return
        output = fds[0]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                channel.close()
                os.dup2(output, 1)
                os.dup2(output, 2)
                os.close(output)
                code = _kale_worker_child(json.loads(message))
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
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        _kale_worker_send(channel, json.dumps({"status": code}).encode("utf-8"))


def _kale_worker_child(request):
    """In the forked child: what kfp.local's ``sh -ec`` command does, minus starting
    Python: write the component's source to a file and run kfp's executor on it."""
    import os
    import sys
    import tempfile

    os.environ.update(request["env"])
    os.environ["_KFP_RUNTIME"] = "true"
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "ephemeral_component.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(request["source"])
    sys.argv = ["executor_main", "--component_module_path", path, *request["arguments"]]
    from kfp.dsl import executor_main

    try:
        executor_main.executor_main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0
