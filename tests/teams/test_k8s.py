"""deploy/k8s/overlays/team as `kubectl apply -k` would send it (`kubectl kustomize` of a copy, credentials.env
from its .example): built-in kinds against Kubernetes KUBERNETES_VERSION's schemas (kubernetes-validate, strict),
the ServiceMonitor against deploy/k8s/schemas/; then what no schema sees (selectors, ports, Secret keys, probe
paths, the ingress's limits against the app's), each check shown failing on a broken copy. Seconds, offline."""
import base64
import copy
import os
import re
import shutil
import subprocess
from types import SimpleNamespace
from unittest import mock

import jsonschema
import kubernetes_validate
import pytest
import yaml

from testkit import ROOT

pytestmark = pytest.mark.teams

K8S = ROOT / "deploy" / "k8s"
TEAM = "overlays/team"
SECRET_FILE = "credentials.env"  # git-ignored; the test renders with credentials.env.example
KUBERNETES_VERSION = "1.32"  # kubernetes-validate's offline schemas (it ships 1.25 to 1.37)
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): K8S / "schemas" / "servicemonitor-v1.schema.yaml"}
ZONE, HOST = "topology.kubernetes.io/zone", "kubernetes.io/hostname"
INGRESS_NGINX = "nginx.ingress.kubernetes.io/"
# The forms ingress-nginx's annotation validators take (internal/ingress/annotations/): a value not in
# its form, or a misspelt name, is ignored without a word and the controller's default applies instead.
SIZE, WHOLE, ON_OFF = r"\d+[bkmg]?", r"\d+", "on|off"
ANNOTATION_FORMS = {
    "proxy-body-size": SIZE, "client-body-buffer-size": SIZE, "proxy-request-buffering": ON_OFF, "proxy-buffering": ON_OFF,
    **dict.fromkeys(["proxy-connect-timeout", "proxy-send-timeout", "proxy-read-timeout", "proxy-next-upstream-tries",
                     "proxy-next-upstream-timeout", "limit-rps", "limit-burst-multiplier"], WHOLE),
    "proxy-next-upstream": r"((error|timeout|invalid_header|http_50[0234]|http_40[34]|http_429|non_idempotent|off)\s?)+",
    "ssl-redirect": "true|false"}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not on PATH: these checks render the overlays with `kubectl kustomize` (no "
                    "cluster needed). Install it (https://kubernetes.io/docs/tasks/tools/) and rerun "
                    "`make test-teams`.", pytrace=False)
    return path


def render(folder) -> list[dict]:
    run = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if run.returncode != 0:
        raise RenderError(run.stderr.strip())
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


class RenderError(AssertionError):
    pass


def copy_of_k8s(tmp_path):
    """deploy/k8s without anyone's real credentials.env, with the example in its place."""
    copied = tmp_path / "k8s"
    shutil.copytree(K8S, copied, ignore=shutil.ignore_patterns(SECRET_FILE))
    overlay = copied / TEAM
    shutil.copy(overlay / f"{SECRET_FILE}.example", overlay / SECRET_FILE)
    return copied


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> list[dict]:
    return render(copy_of_k8s(tmp_path_factory.mktemp("k8s")) / TEAM)


@pytest.fixture(scope="module")
def routes() -> set[str]:
    """The paths create_app answers GET on (its url_map), with a stand-in champion: no model is loaded."""
    from serve import create_app
    from serve.config import Settings

    with mock.patch.dict(os.environ, {}, clear=True):
        app = create_app(champion=SimpleNamespace(label="k8s-check@0"), settings=Settings())
    return {rule.rule for rule in app.url_map.iter_rules() if "GET" in rule.methods}


# ---- schemas -------------------------------------------------------------------------------------

def schema_errors(docs) -> list[str]:
    errors = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
        if crd:
            jsonschema.Draft202012Validator.check_schema(schema := yaml.safe_load(crd.read_text()))
            for e in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                errors.append(f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message} (a CRD's kind needs a schema in CRD_SCHEMAS)")
    return errors


# ---- what the objects mean together --------------------------------------------------------------

def matches(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels + matchExpressions) against labels; an empty one selects nothing here."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok &= {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
               "Exists": key in labels, "DoesNotExist": key not in labels}[op]
    return ok


def nginx_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([bkmg]?)", size.strip(), re.I).groups()
    return int(number) * 1024 ** "bkmg".index(unit.lower() or "b")


def gunicorn_timeout() -> int:
    return int(re.search(r"^timeout = (\d+)", (ROOT / "serve" / "gunicorn.conf.py").read_text(), re.M).group(1))


def pod_environment(docs, container) -> tuple[dict, list[str]]:
    """The container's variables as the kubelet would set them (envFrom first, env over it), and what is
    missing: a Secret or ConfigMap, or a key of one."""
    stores = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Secret", "ConfigMap")}
    env, missing = {}, []

    def data(kind, name):  # None: no such object
        store, plain = stores.get((kind, name)), kind == "ConfigMap"
        return None if store is None else {**store.get("stringData", {}), **{
            k: v if plain else base64.b64decode(v).decode() for k, v in store.get("data", {}).items()}}

    for source in container.get("envFrom", []):
        for kind, ref in (("ConfigMap", source.get("configMapRef")), ("Secret", source.get("secretRef"))):
            if ref:
                values = data(kind, ref["name"])
                if values is None and not ref.get("optional"):
                    missing.append(f"envFrom names {kind} {ref['name']}, which the overlay does not make")
                env.update({source.get("prefix", "") + k: v for k, v in (values or {}).items()})
    for var in container.get("env", []):
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = var.get("value", "")
            continue
        for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            ref = var["valueFrom"].get(field)
            if ref:
                values = data(kind, ref["name"])
                if values is None or ref["key"] not in values:
                    if not ref.get("optional"):
                        missing.append(f"{var['name']} takes key {ref['key']} of {kind} {ref['name']}, "
                                       f"which {'has no such key' if values is not None else 'does not exist'}")
                else:
                    env[var["name"]] = values[ref["key"]]
    return env, missing


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    return found[0] if len(found) == 1 else None


def problems(docs, routes) -> list[str]:
    """Everything that would make the team deployment not work, or not as meant; [] when none."""
    from serve.config import ConfigError, Settings

    kinds = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "ServiceMonitor")
    objects = {kind: one(docs, kind) for kind in kinds}
    found = [f"expected exactly one {kind}" for kind, d in objects.items() if d is None]
    if found:
        return found
    deployment, service, hpa, pdb, ingress, monitor = objects.values()
    if len({d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}) != 1:
        found.append("the objects are not all in one namespace")
    spec, pod = deployment["spec"], deployment["spec"]["template"]
    labels, containers = pod["metadata"].get("labels", {}), pod["spec"]["containers"]
    replicas, min_replicas = spec.get("replicas", 1), hpa["spec"].get("minReplicas", 1)
    if replicas < 3:
        found.append(f"Deployment replicas {replicas} < 3")
    if min_replicas < 3:
        found.append(f"HorizontalPodAutoscaler minReplicas {min_replicas} < 3")
    target = hpa["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
        found.append(f"HorizontalPodAutoscaler scales {target['kind']}/{target['name']}, not the Deployment")
    selectors = [("Deployment", spec["selector"]), ("Service", {"matchLabels": service["spec"].get("selector")}),
                 ("PodDisruptionBudget", pdb["spec"].get("selector"))]
    found += [f"{kind} selector {s} does not select the pods {labels}" for kind, s in selectors if not matches(s, labels)]
    available = pdb["spec"].get("minAvailable")
    if not isinstance(available, int) or available < 2:
        found.append(f"PodDisruptionBudget minAvailable {available!r}: it must keep 2 or more pods")
    elif available >= min(replicas, min_replicas):
        found.append(f"PodDisruptionBudget minAvailable {available} >= {min(replicas, min_replicas)} replicas: "
                     "no pod could ever be evicted, node drains would hang")
    spread = {c["topologyKey"]: c for c in pod["spec"].get("topologySpreadConstraints", [])}
    for key in (ZONE, HOST):
        if key not in spread:
            found.append(f"no topologySpreadConstraint over {key}")
        elif not matches(spread[key].get("labelSelector"), labels):
            found.append(f"the topologySpreadConstraint over {key} does not select the pods")
    ports = {p.get("name"): p["containerPort"] for c in containers for p in c.get("ports", [])}
    for c in containers:
        found += [f"container {c['name']} has no {r} in resources.{part}" for part in ("requests", "limits")
                  for r in ("cpu", "memory") if r not in c.get("resources", {}).get(part, {})]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):  # the startup probe is optional
            get = c.get(probe, {}).get("httpGet")
            if not get and (probe in c or probe != "startupProbe"):
                found.append(f"container {c['name']} has no {probe} that GETs a path of the app")
            elif get and get.get("path") not in routes:
                found.append(f"{probe} path {get.get('path')} is not a route of the app (create_app's url_map)")
            elif get and get["port"] not in (*ports, *ports.values()):
                found.append(f"{probe} port {get['port']} is not a port of the container")
    service_ports = service["spec"]["ports"]
    for p in service_ports:
        if p.get("targetPort", p["port"]) not in (*ports, *ports.values()):
            found.append(f"Service port {p.get('name')} targets {p.get('targetPort')}, no port of the container")
    if not matches(monitor["spec"]["selector"], service["metadata"].get("labels", {})):
        found.append("ServiceMonitor selector does not select the Service (by its labels)")
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint.get("port") not in {p.get("name") for p in service_ports}:
            found.append(f"ServiceMonitor endpoint port {endpoint.get('port')!r} is not a named port of the Service")
        if endpoint.get("path", "/metrics") not in routes:
            found.append(f"ServiceMonitor scrapes {endpoint.get('path')}, not a route of the app")
    hosts = set()
    for rule in ingress["spec"].get("rules", []):
        hosts.add(rule.get("host"))
        for path in rule.get("http", {}).get("paths", []):
            backend = path["backend"]["service"]
            port = backend["port"].get("name") or backend["port"].get("number")
            if backend["name"] != service["metadata"]["name"]:
                found.append(f"Ingress backend names Service {backend['name']}, which the overlay does not make")
            elif port not in {p.get("name") for p in service_ports} | {p["port"] for p in service_ports}:
                found.append(f"Ingress backend port {port!r} is not a port of the Service")
    tls = ingress["spec"].get("tls", [])
    if not tls or not all(t.get("secretName") for t in tls) or not hosts <= {h for t in tls for h in t.get("hosts", [])}:
        found.append("Ingress tls does not cover every host with a secretName")
    env, missing = pod_environment(docs, containers[0])
    found += missing
    literal = {v["name"] for v in containers[0].get("env", []) if "value" in v}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        if name not in env:
            found.append(f"{name} is not set: the tracking server asks for a login")
        elif name in literal:
            found.append(f"{name} is written in the manifest: it belongs in the Secret (secretKeyRef)")
    if env.get("MODEL_DIR"):
        found.append(f"MODEL_DIR={env['MODEL_DIR']}: the pods would serve a baked-in bundle, not the registry")
    if not re.match(r"https?://", env.get("MLFLOW_TRACKING_URI", "")):
        found.append(f"MLFLOW_TRACKING_URI={env.get('MLFLOW_TRACKING_URI')!r}: the team server is http(s)")
    try:
        with mock.patch.dict(os.environ, env, clear=True):
            settings = Settings()
    except ConfigError as e:
        return found + [f"the pods would not start: {e}"]
    if settings.model_poll_seconds <= 0:
        found.append("MODEL_POLL_SECONDS is 0: the pods would never follow the alias")
    annotations = ingress["metadata"].get("annotations", {})
    for name, value in annotations.items():
        form = ANNOTATION_FORMS.get(name.removeprefix(INGRESS_NGINX))
        if name.startswith(INGRESS_NGINX) and not (form and re.fullmatch(form, value, re.I)):
            return found + [f"Ingress annotation {name}: {value!r} " + ("is not in ingress-nginx's form "
                            f"{form}" if form else "is not one these checks know (misspelt?)")]
    body = nginx_bytes(annotations.get(INGRESS_NGINX + "proxy-body-size", "1m"))  # ingress-nginx's default
    if body == 0 or body < settings.max_upload_bytes:
        found.append(f"Ingress proxy-body-size {body} bytes: the app takes uploads up to {settings.max_upload_bytes}"
                     + (" and 0 is no limit at all" if body == 0 else ""))
    read = int(annotations.get(INGRESS_NGINX + "proxy-read-timeout", "60"))
    if read < gunicorn_timeout():
        found.append(f"Ingress proxy-read-timeout {read} s < gunicorn's timeout {gunicorn_timeout()} s")
    return found


# ---- the tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", ["", TEAM])
def test_every_object_is_valid_for_its_schema(tmp_path, folder):
    docs = render(copy_of_k8s(tmp_path) / folder)
    assert docs and schema_errors(docs) == []


def test_the_team_overlay_holds_together(team, routes):
    assert sorted(d["kind"] for d in team) == sorted([
        "Namespace", "ConfigMap", "Secret", "Service", "Deployment", "PodDisruptionBudget",
        "HorizontalPodAutoscaler", "ServiceMonitor", "Ingress"])
    assert {"/health", "/ready", "/metrics"} <= routes
    assert problems(team, routes) == []


def test_the_credentials_are_never_committed(tmp_path):
    overlay = copy_of_k8s(tmp_path) / TEAM
    (overlay / SECRET_FILE).unlink()
    with pytest.raises(RenderError, match=SECRET_FILE):  # no credentials, no deployment
        render(overlay)
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH")
    real = (K8S / TEAM / SECRET_FILE).relative_to(ROOT)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(real)], cwd=ROOT)
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(real)], cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0 and tracked.returncode != 0


def container(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def set_env(docs, name, value):
    env = container(docs)["env"]
    env[:] = [v for v in env if v["name"] != name] + [{"name": name, "value": value}]


def annotate(docs, name, value):
    one(docs, "Ingress")["metadata"]["annotations"][INGRESS_NGINX + name] = value


def spec(docs, kind):
    return one(docs, kind)["spec"]


BREAKAGES = {
    "one replica": (lambda d: spec(d, "Deployment").update(replicas=1), "replicas 1 < 3"),
    "HPA min 2": (lambda d: spec(d, "HorizontalPodAutoscaler").update(minReplicas=2), "minReplicas 2"),
    "PDB selects nothing": (lambda d: spec(d, "PodDisruptionBudget").update(
        selector={"matchLabels": {"app.kubernetes.io/name": "digit"}}), "PodDisruptionBudget selector"),
    "PDB blocks drains": (lambda d: spec(d, "PodDisruptionBudget").update(minAvailable=3), "drains would hang"),
    "Service selects nothing": (lambda d: spec(d, "Service").update(selector={"app": "digits"}), "Service selector"),
    "no zone spread": (lambda d: spec(d, "Deployment")["template"]["spec"]["topologySpreadConstraints"].pop(0),
                       "no topologySpreadConstraint over " + ZONE),
    "no limits": (lambda d: container(d)["resources"].pop("limits"), "resources.limits"),
    "probe on a path the app lacks": (lambda d: container(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
                                      "readinessProbe path /healthz"),
    "ServiceMonitor on a port number": (lambda d: spec(d, "ServiceMonitor")["endpoints"][0].update(port="8000"),
                                        "endpoint port '8000'"),
    "ServiceMonitor selects nothing": (lambda d: spec(d, "ServiceMonitor").update(
        selector={"matchLabels": {"app": "digits"}}), "ServiceMonitor selector"),
    "Ingress to another Service": (lambda d: spec(d, "Ingress")["rules"][0]["http"]["paths"][0]["backend"][
        "service"].update(name="digits-api"), "Service digits-api"),
    "Ingress body size 1m": (lambda d: annotate(d, "proxy-body-size", "1m"), "proxy-body-size 1048576"),
    "Ingress body size unlimited": (lambda d: annotate(d, "proxy-body-size", "0"), "0 is no limit"),
    "Ingress read timeout 10 s": (lambda d: annotate(d, "proxy-read-timeout", "10"), "proxy-read-timeout 10"),
    "Ingress timeout with a unit": (lambda d: annotate(d, "proxy-read-timeout", "30s"), "not in ingress-nginx's form"),
    "Ingress annotation misspelt": (lambda d: annotate(d, "proxy-body-sise", "10m"), "misspelt"),
    "Ingress without TLS": (lambda d: spec(d, "Ingress").pop("tls"), "Ingress tls"),
    "Secret without the password": (lambda d: one(d, "Secret")["data"].pop("MLFLOW_TRACKING_PASSWORD"),
                                    "key MLFLOW_TRACKING_PASSWORD of Secret"),
    "password in the manifest": (lambda d: set_env(d, "MLFLOW_TRACKING_PASSWORD", "hunter2"), "belongs in the Secret"),
    "a bundle instead": (lambda d: set_env(d, "MODEL_DIR", "/model"), "MODEL_DIR=/model"),
    "polling off": (lambda d: set_env(d, "MODEL_POLL_SECONDS", "0"), "MODEL_POLL_SECONDS is 0"),
    "a local store": (lambda d: set_env(d, "MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"), "MLFLOW_TRACKING_URI="),
    "a setting the app refuses": (lambda d: set_env(d, "MAX_UPLOAD_BYTES", "ten"), "would not start"),
    "an upload limit over the ingress's": (lambda d: set_env(d, "MAX_UPLOAD_BYTES", str(20 * 2 ** 20)),
                                           "uploads up to 20971520"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_check_fails_on_a_broken_copy(team, routes, breakage):
    broken, (breaking, says) = copy.deepcopy(team), BREAKAGES[breakage]
    breaking(broken)
    found = problems(broken, routes)
    assert any(says in problem for problem in found), found


# Broken the way a person would break it: in the overlay's files, rendered again.
OVERLAY_EDITS = {
    "replicas: 1": ("\nreplicas:\n  - {name: digits, count: 1}\n", "Deployment replicas 1 < 3"),
    "a wrong PDB selector": ("  - target: {kind: PodDisruptionBudget, name: digits}\n    patch: |-\n      - {op: replace, "
                             "path: /spec/selector/matchLabels, value: {app: digits}}\n", "PodDisruptionBudget selector"),
}


@pytest.mark.parametrize("edit", OVERLAY_EDITS)
def test_a_broken_overlay_fails_the_checks(tmp_path, routes, edit):
    text, says = OVERLAY_EDITS[edit]
    kustomization = copy_of_k8s(tmp_path) / TEAM / "kustomization.yaml"
    assert kustomization.read_text().rstrip().endswith("value: 2}")  # `patches:` is last: an entry appends
    kustomization.write_text(kustomization.read_text().rstrip("\n") + "\n" + text)
    found = problems(render(kustomization.parent), routes)
    assert any(says in problem for problem in found), found


@pytest.mark.parametrize("kind, breaking, says", [
    ("Deployment", lambda d: d["spec"].update(replica=3), "'replica' was unexpected"),  # a typo: strict
    ("Deployment", lambda d: d["spec"].update(replicas="3"), "is not of type 'integer'"),
    ("Ingress", lambda d: d["spec"]["rules"][0]["http"]["paths"][0].pop("pathType"), "'pathType' is a required"),
    ("PodDisruptionBudget", lambda d: d["spec"].update(minAvailable=True), "minAvailable"),
    ("ServiceMonitor", lambda d: d["spec"].update(endpoint=d["spec"].pop("endpoints")), "'endpoints' is a required"),
    ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(intervall="30s"), "'intervall' was unexpected"),
    ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(port=8000), "8000 is not of type 'string'"),
    ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(scrapeTimeout="10 seconds"), "does not match"),
])
def test_the_schemas_refuse_a_broken_object(team, kind, breaking, says):
    broken = copy.deepcopy(one(team, kind))
    breaking(broken)
    errors = schema_errors([broken])
    assert any(says in error for error in errors), errors
