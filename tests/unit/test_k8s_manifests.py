"""deploy/k8s/: the manifests parse, what they run is accepted by the CLI's own argument parser and
--http's address rules, the token file the args name is the Secret's key mounted with a mode our
token reader accepts, and the node agent / sidecar have what attaching needs (hostPID or
shareProcessNamespace, CAP_SYS_PTRACE). YAML through the safe loader vendored in strictyaml (a
dependency of the test extra's skills-ref): no YAML package added for this."""
from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from strictyaml.ruamel import YAML

from flight_mcp import cli
from flight_mcp.http_server import is_loopback, parse_listen
from flight_mcp.tokens import file_problem

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))

# Fields of the Kubernetes objects we write (core/v1 and apps/v1): a misspelt field is silently
# dropped by a lenient apply, so a typo here would ship a pod without its probe or capability.
KNOWN = {
    "pod": {"hostPID", "hostNetwork", "shareProcessNamespace", "automountServiceAccountToken", "nodeSelector",
            "containers", "volumes", "tolerations", "serviceAccountName", "securityContext", "priorityClassName"},
    "container": {"name", "image", "imagePullPolicy", "command", "args", "env", "ports", "securityContext",
                  "readinessProbe", "livenessProbe", "startupProbe", "resources", "volumeMounts"},
    "securityContext": {"runAsUser", "runAsGroup", "runAsNonRoot", "allowPrivilegeEscalation", "capabilities",
                        "readOnlyRootFilesystem", "privileged"},
    "probe": {"tcpSocket", "exec", "httpGet", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
              "failureThreshold", "successThreshold"},
    "port": {"name", "containerPort", "hostPort", "hostIP", "protocol"},
}


def documents():
    """(file name, document) of every manifest."""
    yaml = YAML(typ="safe", pure=True)
    found = [(path.name, doc) for path in MANIFESTS for doc in yaml.load_all(path.read_text()) if doc]
    assert {name for name, _ in found} == {"node-agent-daemonset.yaml", "sidecar-example.yaml"}
    return found


def pod_specs():
    """(file name, kind, pod spec) of every workload."""
    return [(name, doc["kind"], doc["spec"]["template"]["spec"]) for name, doc in documents()
            if doc["kind"] in ("DaemonSet", "Deployment")]


def flight_containers(spec):
    return [c for c in spec["containers"] if c["image"].startswith("flight-mcp:")]


def test_manifests_parse_with_known_fields():
    kinds = sorted(doc["kind"] for _, doc in documents())
    assert kinds == ["DaemonSet", "Deployment", "Namespace"]
    for _, doc in documents():
        assert doc["apiVersion"] in ("v1", "apps/v1") and doc["metadata"]["name"]
    for name, _, spec in pod_specs():
        assert set(spec) <= KNOWN["pod"], (name, set(spec) - KNOWN["pod"])
        for c in spec["containers"]:
            assert set(c) <= KNOWN["container"], (name, set(c) - KNOWN["container"])
            assert set(c.get("securityContext", {})) <= KNOWN["securityContext"], name
            for probe in ("readinessProbe", "livenessProbe"):
                assert set(c.get(probe, {})) <= KNOWN["probe"], (name, probe)
            for port in c.get("ports", []):
                assert set(port) <= KNOWN["port"], (name, port)
            assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"], (name, c["name"])
        # the selector selects the template
        doc = next(d for n, d in documents() if n == name and d["kind"] in ("DaemonSet", "Deployment"))
        assert doc["spec"]["selector"]["matchLabels"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("name, kind, spec", pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_what_they_run_is_what_the_cli_accepts(name, kind, spec):
    [c] = flight_containers(spec)
    assert "command" not in c, "the image's entrypoint is flight-mcp; the manifest gives its arguments"
    entrypoint = re.search(r"^ENTRYPOINT\s+(.*)$", (DEPLOY / "Dockerfile").read_text(), re.M).group(1)
    assert entrypoint == '["flight-mcp"]'
    argv = c["args"]
    assert not any("$(" in a for a in argv)
    args = cli._parser().parse_intermixed_args(argv)   # the real parser: an unknown flag exits
    assert args.target is None and not args.stdio and not args.allow_mutating
    host, port = parse_listen(args.http)
    # a non-loopback address is refused without a token the operator gave: here always a file
    assert args.token_file, argv
    if kind == "DaemonSet":
        assert not is_loopback(host)
        [p] = c["ports"]
        assert p["containerPort"] == p["hostPort"] == port
    else:
        assert is_loopback(host), "the sidecar listens on the pod's loopback (kubectl port-forward reaches it)"
    # the readiness probe checks that very port, without a token
    probe = c["readinessProbe"]
    if "tcpSocket" in probe:
        assert probe["tcpSocket"]["port"] == port and not is_loopback(host)  # the kubelet dials the pod IP
    else:
        assert f"('{host}', {port})" in " ".join(probe["exec"]["command"])

    # the token file is the Secret's key, mounted read-only with a mode our reader accepts
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    matches = [(mounts[n], volumes[n]["secret"]) for n in mounts if "secret" in volumes.get(n, {})]
    [(mount, secret)] = matches
    assert mount["readOnly"] is True
    [item] = secret["items"]
    assert item["key"] == "token" and args.token_file == f"{mount['mountPath'].rstrip('/')}/{item['path']}"
    mode = secret["defaultMode"]
    assert mode == 0o400, "defaultMode 256 (0400): a decimal, which no YAML reader takes for another number"

    class Stat:   # what the container's root sees on the mounted file
        st_mode = stat.S_IFREG | mode
        st_uid = 0
    assert file_problem(Stat, 0) is None
    assert c["securityContext"]["runAsUser"] == 0


@pytest.mark.parametrize("name, kind, spec", pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_they_can_attach(name, kind, spec):
    [c] = flight_containers(spec)
    assert "SYS_PTRACE" in c["securityContext"]["capabilities"]["add"]
    assert "SYS_PTRACE" not in c["securityContext"]["capabilities"].get("drop", [])
    if kind == "DaemonSet":
        assert spec["hostPID"] is True and not spec.get("hostNetwork")
        assert spec["automountServiceAccountToken"] is False
    else:
        assert spec["shareProcessNamespace"] is True and len(spec["containers"]) == 2
        [app] = [x for x in spec["containers"] if x is not c]
        assert app["command"][0] == "python"   # a Python app to attach to


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["python:3.11-slim"] * 2, froms
    assert "build-essential" in text and "pip wheel" in text and "--no-index --find-links /wheels flight-mcp" in text
    assert (DEPLOY / "Dockerfile.dockerignore").read_text().count(".venv")
