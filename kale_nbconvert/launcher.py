"""The generated script's command line: compile to YAML, or run on this machine.

Embedded verbatim in every generated script (which must not need this project), so
everything here is top-level functions prefixed ``_kale_`` that import what they use.
"""


def _kale_main(build_pipeline, parameters, packages, script, argv=None):
    """``python pipeline.py [--local] [--param NAME=VALUE ...] [--output FILE]``."""
    import argparse
    import os
    import sys

    stem = os.path.splitext(os.path.abspath(script))[0]
    parser = argparse.ArgumentParser(
        prog=os.path.basename(script),
        description="Compile this Kubeflow pipeline to YAML (default) or run it on this "
        "machine with --local.",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="run the pipeline here with kfp.local (no cluster, nothing installed)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a pipeline parameter (repeatable): " + ", ".join(
            f"{name} ({type_name}, default {default!r})"
            for name, (type_name, default) in parameters.items()
        ),
    )
    parser.add_argument(
        "--output",
        default=f"{stem}.yaml",
        help="where to write the compiled pipeline (default: %(default)s)",
    )
    parser.add_argument(
        "--runs-dir",
        default=os.path.join(os.path.dirname(os.path.abspath(script)), "kale-local-runs"),
        help="where --local keeps run outputs (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        arguments = _kale_parse_params(args.param, parameters)
    except ValueError as error:
        parser.error(str(error))
    if args.local:
        return _kale_run_local(build_pipeline, packages, arguments, args.runs_dir)
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(), args.output, pipeline_parameters=arguments or None)
    print(f"Pipeline compiled to {args.output}", file=sys.stderr)
    return 0


def _kale_parse_params(pairs, parameters):
    """``["n=3", ...]`` -> ``{"n": 3}``, typed as the parameter's declared type."""
    import json

    arguments = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: write it as NAME=VALUE")
        if name not in parameters:
            known = ", ".join(parameters) or "none"
            raise ValueError(f"--param {name!r}: no such pipeline parameter (known: {known})")
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


def _kale_run_local(build_pipeline, packages, arguments, runs_dir):
    """Run every step here with kfp.local's SubprocessRunner, without a venv."""
    import os
    import re
    import sys
    import time

    from kfp import local

    missing = _kale_check_local_packages(packages)
    if missing:
        print(
            "kale: a local run installs nothing; missing here: " + " ".join(missing)
            + "\n  fix: pip install " + " ".join(missing),
            file=sys.stderr,
        )
        return 1
    os.makedirs(runs_dir, exist_ok=True)
    before = set(os.listdir(runs_dir))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=runs_dir)
    pipeline = build_pipeline(local=True)
    started = time.perf_counter()
    try:
        pipeline(**arguments)
    except Exception as error:  # kfp.local raises RuntimeError for a failed task
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
        print(f"\nkale: the local run failed: {message}", file=sys.stderr)
        _kale_print_outputs(runs_dir, before)
        return 1
    elapsed = time.perf_counter() - started
    print(f"\nkale: all steps succeeded in {elapsed:.2f} s", file=sys.stderr)
    _kale_print_outputs(runs_dir, before)
    return 0


def _kale_print_outputs(runs_dir, before):
    """List each step's output artifacts of the run just made."""
    import os
    import sys

    new = sorted(set(os.listdir(runs_dir)) - before)
    if not new:
        return
    run = os.path.join(runs_dir, new[-1])
    print(f"kale: outputs in {run}", file=sys.stderr)
    for task in sorted(os.listdir(run)):
        folder = os.path.join(run, task)
        if not os.path.isdir(folder):
            continue
        for output in sorted(os.listdir(folder)):
            path = os.path.join(folder, output)
            size = sum(
                os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(path)
                for name in names
            ) if os.path.isdir(path) else os.path.getsize(path)
            print(f"  {task}/{output}  {size:,} bytes", file=sys.stderr)
