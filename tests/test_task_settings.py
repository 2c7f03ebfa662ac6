"""Issue 13: every per-step setting tag reaches the compiled pipeline (the IR YAML or its
Kubernetes platform section) for the right step, with the right value; steps_defaults
are overridden by a step's own tag key by key. The YAML is parsed, never grepped."""

from __future__ import annotations

import pytest

from helpers import make_notebook, run_script, write_script, yaml_documents

DIGEST = "sha256:" + "ab" * 32

OWN = [
    "request:cpu:500m",
    "request:memory:1Gi",
    f"image:registry.example.com/team/img@{DIGEST}",
    "retry:3:30s",
    "timeout:30m",
    "cache:disabled",
    "env:MODE:fast:and:colons",
    "secret:db-creds:password:DB_PASSWORD",
    "secret-volume:gcp-key:/secrets/gcp",
    "configmap:app-cfg:mode:CFG_MODE",
    "configmap-volume:app-cfg:/etc/app",
    "node-selector:pool:gpu",
    "toleration:dedicated=gpu:NoSchedule",
    "toleration:nvidia.com/gpu:NoSchedule",
    "shm:2Gi",
]

# Every kind again, as a default: step 'own' overrides each one, step 'plain' keeps it.
DEFAULTS = [
    "request:cpu:100m",
    "request:memory:256Mi",
    "image:python:3.12-slim",
    "retry:2",
    "timeout:90s",
    "cache:enabled",
    "env:MODE:slow",
    "env:SHARED:yes",
    "secret:other-creds:pw:DB_PASSWORD",
    "secret-volume:default-key:/secrets/gcp",
    "configmap:default-cfg:mode:CFG_MODE",
    "configmap-volume:default-cfg:/etc/app",
    "node-selector:pool:cpu",
    "node-selector:zone:a",
    "toleration:dedicated=cpu:NoSchedule",
    "shm:64Mi",
]


def _compile(folder, cells, metadata=None, name="nb.ipynb"):
    script = write_script(make_notebook(cells, metadata), folder, name)
    result = run_script(script)
    assert result.returncode == 0, result.stderr
    spec, *platform = yaml_documents(script.with_suffix(".yaml"))
    return script, spec, (platform[0] if platform else {})


@pytest.fixture(scope="module")
def own_only(tmp_path_factory):
    return _compile(
        tmp_path_factory.mktemp("own"),
        [("x = 1", ["step:a", *OWN]), ("y = x + 1", ["step:b", "prev:a"])],
        {"docker_image": "python:3.11-slim"},
    )


@pytest.fixture(scope="module")
def with_defaults(tmp_path_factory):
    return _compile(
        tmp_path_factory.mktemp("defaults"),
        [("x = 1", ["step:own", *OWN]), ("y = x + 1", ["step:plain", "prev:own"])],
        {"docker_image": "python:3.11-slim", "steps_defaults": DEFAULTS},
    )


def container(spec, step):
    return spec["deploymentSpec"]["executors"][f"exec-{step}"]["container"]


def task(spec, step):
    return spec["root"]["dag"]["tasks"][step]


def k8s(platform, step):
    return platform.get("platforms", {}).get("kubernetes", {}).get(
        "deploymentSpec", {}).get("executors", {}).get(f"exec-{step}", {})


def env_of(spec, step):
    return {item["name"]: item["value"] for item in container(spec, step).get("env", [])}


# -- every row, on the step that carries it (and not on the other) ------------------

def test_requests(own_only):
    _, spec, _ = own_only
    assert container(spec, "a")["resources"]["resourceCpuRequest"] == "500m"
    assert container(spec, "a")["resources"]["resourceMemoryRequest"] == "1Gi"
    assert "resources" not in container(spec, "b")


def test_image(own_only):
    _, spec, _ = own_only
    assert container(spec, "a")["image"] == f"registry.example.com/team/img@{DIGEST}"
    assert container(spec, "b")["image"] == "python:3.11-slim"  # docker_image: the default


def test_retry(own_only):
    _, spec, _ = own_only
    policy = task(spec, "a")["retryPolicy"]
    assert policy["maxRetryCount"] == 3
    assert policy["backoffDuration"] == "30s"
    assert "retryPolicy" not in task(spec, "b")


def test_timeout(own_only):
    _, _, platform = own_only
    assert k8s(platform, "a")["activeDeadlineSeconds"] in (1800, "1800")
    assert "activeDeadlineSeconds" not in k8s(platform, "b")


def test_cache(own_only):
    _, spec, _ = own_only
    assert task(spec, "a")["cachingOptions"].get("enableCache", False) is False
    assert task(spec, "b")["cachingOptions"]["enableCache"] is True


def test_env(own_only):
    _, spec, _ = own_only
    assert env_of(spec, "a") == {"MODE": "fast:and:colons"}
    assert env_of(spec, "b") == {}


def test_secret_as_env_and_volume_without_its_value(own_only):
    script, spec, platform = own_only
    executor = k8s(platform, "a")
    [as_env] = executor["secretAsEnv"]
    assert as_env["secretName"] == "db-creds"
    assert as_env["keyToEnv"] == [{"secretKey": "password", "envVar": "DB_PASSWORD"}]
    [as_volume] = executor["secretAsVolume"]
    assert as_volume["secretName"] == "gcp-key"
    assert as_volume["mountPath"] == "/secrets/gcp"
    assert "secretAsEnv" not in k8s(platform, "b")
    assert "DB_PASSWORD" not in env_of(spec, "a")  # from the cluster's secret, not a value


def test_configmap_as_env_and_volume(own_only):
    _, _, platform = own_only
    executor = k8s(platform, "a")
    [as_env] = executor["configMapAsEnv"]
    assert as_env["configMapName"] == "app-cfg"
    assert as_env["keyToEnv"] == [{"configMapKey": "mode", "envVar": "CFG_MODE"}]
    [as_volume] = executor["configMapAsVolume"]
    assert (as_volume["configMapName"], as_volume["mountPath"]) == ("app-cfg", "/etc/app")


def test_node_selector(own_only):
    _, _, platform = own_only
    assert k8s(platform, "a")["nodeSelector"]["labels"] == {"pool": "gpu"}
    assert "nodeSelector" not in k8s(platform, "b")


def test_tolerations(own_only):
    _, _, platform = own_only
    tolerations = sorted(k8s(platform, "a")["tolerations"], key=lambda t: t["key"])
    assert tolerations == [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]


def test_shm(own_only):
    _, _, platform = own_only
    [mount] = k8s(platform, "a")["emptyDirMounts"]
    assert mount["mountPath"] == "/dev/shm"
    assert mount["medium"] == "Memory"
    assert mount["sizeLimit"] == "2Gi"
    assert "emptyDirMounts" not in k8s(platform, "b")


# -- steps_defaults: the step's own value wins key by key; merged by name ------------

def test_defaults_reach_a_step_without_own_settings(with_defaults):
    _, spec, platform = with_defaults
    plain = container(spec, "plain")
    assert plain["resources"]["resourceCpuRequest"] == "100m"
    assert plain["resources"]["resourceMemoryRequest"] == "256Mi"
    assert plain["image"] == "python:3.12-slim"
    assert task(spec, "plain")["retryPolicy"]["maxRetryCount"] == 2
    assert task(spec, "plain")["cachingOptions"]["enableCache"] is True
    assert env_of(spec, "plain") == {"MODE": "slow", "SHARED": "yes"}
    executor = k8s(platform, "plain")
    assert executor["activeDeadlineSeconds"] in (90, "90")
    assert executor["secretAsEnv"][0]["secretName"] == "other-creds"
    assert executor["secretAsVolume"][0]["secretName"] == "default-key"
    assert executor["configMapAsEnv"][0]["configMapName"] == "default-cfg"
    assert executor["configMapAsVolume"][0]["configMapName"] == "default-cfg"
    assert executor["nodeSelector"]["labels"] == {"pool": "cpu", "zone": "a"}
    assert executor["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}
    ]
    assert executor["emptyDirMounts"][0]["sizeLimit"] == "64Mi"


def test_own_settings_win_over_defaults_key_by_key(with_defaults):
    _, spec, platform = with_defaults
    own = container(spec, "own")
    assert own["resources"]["resourceCpuRequest"] == "500m"
    assert own["resources"]["resourceMemoryRequest"] == "1Gi"
    assert own["image"] == f"registry.example.com/team/img@{DIGEST}"
    assert task(spec, "own")["retryPolicy"]["maxRetryCount"] == 3
    assert task(spec, "own")["cachingOptions"].get("enableCache", False) is False
    # env merged by name: own MODE wins, the default's SHARED stays
    assert env_of(spec, "own") == {"MODE": "fast:and:colons", "SHARED": "yes"}
    executor = k8s(platform, "own")
    assert executor["activeDeadlineSeconds"] in (1800, "1800")
    # the same variable / mount path from a default of the same kind is replaced
    assert [e["secretName"] for e in executor["secretAsEnv"]] == ["db-creds"]
    assert [v["secretName"] for v in executor["secretAsVolume"]] == ["gcp-key"]
    assert [e["configMapName"] for e in executor["configMapAsEnv"]] == ["app-cfg"]
    assert [v["configMapName"] for v in executor["configMapAsVolume"]] == ["app-cfg"]
    assert executor["nodeSelector"]["labels"] == {"pool": "gpu", "zone": "a"}
    assert sorted((t["key"], t.get("value")) for t in executor["tolerations"]) == [
        ("dedicated", "gpu"), ("nvidia.com/gpu", None),
    ]
    assert executor["emptyDirMounts"][0]["sizeLimit"] == "2Gi"


def test_an_env_var_replaces_a_default_of_another_kind(tmp_path):
    _, spec, platform = _compile(
        tmp_path,
        [("x = 1", ["step:a", "env:DB_PASSWORD:plain", "retry:5"])],
        {"steps_defaults": ["secret:creds:pw:DB_PASSWORD", "retry:2:1m"]},
    )
    assert env_of(spec, "a") == {"DB_PASSWORD": "plain"}
    assert "secretAsEnv" not in k8s(platform, "a")
    # retry is one setting: the own 'retry:5' (no backoff) replaces 'retry:2:1m'
    assert task(spec, "a")["retryPolicy"]["maxRetryCount"] == 5
    assert task(spec, "a")["retryPolicy"]["backoffDuration"] == "0s"  # KFP's default


def test_kale_notebook_timeout_is_the_default_timeout(tmp_path):
    _, _, platform = _compile(
        tmp_path,
        [("x = 1", ["step:a"]), ("y = x", ["step:b", "prev:a", "timeout:2h"])],
        {"timeout": 600},
    )
    assert k8s(platform, "a")["activeDeadlineSeconds"] in (600, "600")
    assert k8s(platform, "b")["activeDeadlineSeconds"] in (7200, "7200")


def test_a_steps_defaults_timeout_wins_over_kales_timeout_key(tmp_path):
    _, _, platform = _compile(
        tmp_path, [("x = 1", ["step:a"])], {"timeout": 600, "steps_defaults": ["timeout:1m"]}
    )
    assert k8s(platform, "a")["activeDeadlineSeconds"] in (60, "60")


# -- --local: env vars, retries and caching are kfp.local's own; the rest is listed ----

def test_a_local_run_applies_env_and_caching_and_lists_the_rest(tmp_path):
    script = write_script(
        make_notebook([
            ("import os\nx = os.environ['MODE']", ["step:a", "env:MODE:fast", "toleration:dedicated=gpu:NoSchedule", "secret:db-creds:password:DB_PASSWORD"]),
            ("y = x + '1'\nprint(y)", ["step:b", "prev:a", "cache:disabled", "retry:1"]),
        ]),
        tmp_path,
        "nb.ipynb",
    )
    first = run_script(script, "--local", "--cache")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "b | fast1" in first.stdout  # the env var reached the step
    listed = [line for line in first.stdout.splitlines() if "not applied locally" in line]
    assert listed == ["kale: not applied locally (cluster-only settings): a: secret 'db-creds', toleration"]
    second = run_script(script, "--local", "--cache")
    assert second.returncode == 0, second.stdout + second.stderr
    lines = {line.split()[1]: line.split()[2] for line in second.stdout.splitlines() if line.startswith("[")}
    assert lines == {"a": "cached", "b": "succeeded"}  # cache:disabled re-runs b


def test_a_hostile_env_value_stays_data(tmp_path):
    value = "x''' + __import__('os').system('touch PWNED') + '''\"\"\" {{ x }} {% if %}:\\n"
    _, spec, _ = _compile(tmp_path, [("x = 1", ["step:a", f"env:EVIL:{value}"])])
    assert env_of(spec, "a") == {"EVIL": value}
    assert not (tmp_path / "PWNED").exists()


def test_a_local_run_lists_a_steps_own_image_even_when_every_step_sets_it(tmp_path):
    """The image a local run cannot use is any other than the notebook's own (BASE_IMAGE),
    however many steps set it."""
    script = write_script(
        make_notebook([
            ("x = 1", ["step:a", "image:python:3.12-slim"]),
            ("y = x + 1", ["step:b", "prev:a", "image:python:3.12-slim"]),
        ]),
        tmp_path,
        "nb.ipynb",
    )
    result = run_script(script, "--local")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = [line for line in result.stdout.splitlines() if "not applied locally" in line]
    assert listed == ["kale: not applied locally (cluster-only settings): "
                      "a: image 'python:3.12-slim'; b: image 'python:3.12-slim'"]
