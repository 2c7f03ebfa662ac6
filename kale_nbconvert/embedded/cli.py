"""The generated script's command line: compile to YAML, run here, or run on a cluster.
Runs in the script's command line (``python pipeline.py ...``), never inside a step.

``_kale_main`` parses the flags and hands over to ``local_run.py`` (``--local``) or
``cluster.py`` (``--host``). Embedded verbatim in every generated script (which must not
need this project), so everything here is top-level functions prefixed ``_kale_`` that
import what they use.
"""


def _kale_main(build_pipeline, parameters, packages, script, argv=None,
               pipeline_name="", experiment="", host="", preload=(), base_image=""):
    """``python pipeline.py [--local [--cache] [--jobs N] | --host [URL]] [--param NAME=VALUE ...]``.

    ``pipeline_name``, ``experiment`` and ``host`` are the notebook's
    ``kubeflow_notebook`` metadata: defaults that the flags override. ``preload`` are
    the installed modules the notebook imports, which a ``--local`` run imports once
    in its warm worker; ``base_image`` the notebook's image (a step with its own is
    listed as a cluster-only setting on ``--local``).
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
        "--jobs",
        type=_kale_parse_jobs,
        metavar="N",
        help="with --local: run up to N steps at once, each as soon as the steps it "
        f"depends on have succeeded (default: the number of cores here, {os.cpu_count() or 1}; "
        "1: one after another)",
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
    if args.jobs is not None and not args.local:
        parser.error("--jobs applies to --local runs (a cluster runs independent steps at once by itself)")
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
            base_image=base_image, jobs=args.jobs or os.cpu_count() or 1,
        )
    if cluster_run:
        pipeline = build_pipeline()
        _kale_compile(pipeline, args.output)
        return _kale_submit(args, arguments, _kale_task_order(pipeline.pipeline_spec))
    _kale_compile(build_pipeline(), args.output, arguments or None)
    print(f"Pipeline compiled to {args.output}", file=sys.stderr)
    return 0


def _kale_compile(pipeline, output, arguments=None):
    """Compile ``pipeline`` to the YAML file ``output`` with kfp, and keep the file
    readable: kfp heads it with comments that show the pipeline's description and its
    inputs' defaults as they are, so a default holding a line break (a query written
    over several lines) ends its comment line and the rest lands in the YAML as data,
    and a control character (U+0084) makes every YAML reader refuse the whole file
    (kfp's own loader and a cluster's upload too). The documents themselves are
    escaped by the YAML writer. Where the header needs it, it is written again with
    those characters as Python escapes (``\\n``, ``\\x84``): it is commentary, nothing
    reads it. The header is rebuilt with kfp's own function and replaced only when the
    file starts with it, so another kfp's layout is left as it wrote it."""
    from kfp import compiler

    compiler.Compiler().compile(pipeline, output, pipeline_parameters=arguments)
    try:
        from google.protobuf import json_format
        from kfp.compiler import pipeline_spec_builder as builder

        spec = builder.modify_pipeline_spec_with_override(
            pipeline_spec=pipeline.pipeline_spec, pipeline_name=None,
            pipeline_parameters=arguments)
        shown = {"pipelineInfo": {"name": spec.pipeline_info.name}, "root": {}}
        for key, field in (("inputDefinitions", "input_definitions"),
                           ("outputDefinitions", "output_definitions")):
            if spec.root.HasField(field):
                shown["root"][key] = json_format.MessageToDict(getattr(spec.root, field))
        header = builder.extract_comments_from_pipeline_spec(shown, pipeline.description)
        readable = builder.extract_comments_from_pipeline_spec(
            _kale_comment_safe(shown, False), _kale_comment_safe(pipeline.description, True))
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return  # another kfp: its file as it wrote it
    if readable == header:
        return
    with open(output, encoding="utf-8", newline="") as stream:
        text = stream.read()
    if text.startswith(header):
        with open(output, "w", encoding="utf-8", newline="") as stream:
            stream.write(readable + text[len(header):])


def _kale_comment_safe(value, keep_line_breaks):
    """``value`` (a string, or the dicts and lists holding them) with every character
    that would break a YAML comment line as a Python escape: line breaks (unless
    ``keep_line_breaks``: kfp splits a description into comment lines itself) and the
    characters YAML readers refuse."""
    import re

    if isinstance(value, dict):
        return {key: _kale_comment_safe(item, keep_line_breaks) for key, item in value.items()}
    if isinstance(value, list):
        return [_kale_comment_safe(item, keep_line_breaks) for item in value]
    if not isinstance(value, str):
        return value
    # what YAML allows in a stream, less what ends a line
    allowed = "\t\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff"
    if keep_line_breaks:
        allowed += "\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029"  # what str.splitlines splits on
    return re.sub(f"[^{allowed}]", lambda m: m.group().encode("unicode_escape").decode("ascii"), value)


def _kale_parse_jobs(text):
    """``--jobs N``: a whole number of steps at once, 1 or more (argparse reports the
    ``ArgumentTypeError`` as a usage error, naming the flag)."""
    import argparse

    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the number of steps to run at once, a whole number of 1 or "
            "more (1 runs them one after another)")
    return jobs


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
