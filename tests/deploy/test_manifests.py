"""The deployment files: Kubernetes manifests valid against the API schema, HAProxy configs that HAProxy
accepts, container entrypoints that the CLI accepts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from streamer.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kind(name: str) -> dict:
    return next(d for p in MANIFESTS for d in documents(p) if f"{d['kind']}/{d['metadata']['name']}" == name)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes(path):
    for doc in documents(path):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_the_deployment_probes_readiness_and_liveness_and_outlasts_the_drain():
    pod = kind("Deployment/streamer")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = 30  # ServeOptions.drain_timeout: the longest a session's finals take after SIGTERM
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5


def test_the_autoscaler_scales_on_sessions_the_daemon_exports():
    metric = kind("HorizontalPodAutoscaler/streamer")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric == "streamer_sessions_active"


def haproxy_check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return subprocess.run(["haproxy", "-c", "-f", str(config)], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=30)


def test_the_haproxy_config_is_valid():
    env = {"STREAMER_BIND": "127.0.0.1:8765", **{f"STREAMER_R{i}": f"127.0.0.1:{9000 + i}" for i in (1, 2, 3)}}
    done = haproxy_check(DEPLOY / "haproxy" / "haproxy.cfg", env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_kubernetes_haproxy_config_is_valid(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(kind("ConfigMap/streamer-haproxy")["data"]["haproxy.cfg"])
    done = haproxy_check(config, {})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_the_images_entrypoint_is_a_valid_serve_command(name):
    text = (DEPLOY / "docker" / name).read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint[:2] == ["streamer", "serve"]
    args = build_parser().parse_args(entrypoint[1:])
    assert args.host == "0.0.0.0" and args.port == 8765
