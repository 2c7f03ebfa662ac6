"""Cluster runs: upload and start the pipeline on Kubeflow Pipelines (``--host``), and
follow it with ``--wait``. Runs in the script's command line, never inside a step.
"""


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
    the run's outcome. Ctrl-C stops following; the run goes on on the cluster.

    Ctrl-C raises ``KeyboardInterrupt`` as usual and also sets a flag the loop checks:
    raised in the middle of a request, the interrupt can be swallowed, or turned into
    another error, by a library between us and the socket (a finalizer, a retry loop),
    and the script would go on polling or report a cluster error."""
    import signal
    import sys
    import threading
    import time

    final = {"SUCCEEDED": 0, "FAILED": 1, "CANCELED": 1, "SKIPPED": 0}
    shown, started = {}, time.monotonic()
    stop = threading.Event()

    def _stop(number, frame):
        stop.set()
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _stop)
    try:
        while not stop.is_set():
            try:
                run = client.get_run(run_id)
            except Exception as error:  # noqa: BLE001 - one line, then keep the exit code honest
                if stop.is_set():
                    break
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
            stop.wait(poll)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
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
