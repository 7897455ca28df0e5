"""tools/k8s/raycluster.yaml is a KubeRay RayCluster (ray.io/v1) that can run IoTix shards: parsed, not applied."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "tools" / "k8s" / "raycluster.yaml"
DOCKERFILE = ROOT / "tools" / "k8s" / "Dockerfile"
QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti)?$")


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    documents = list(yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")))
    assert len(documents) == 1
    return documents[0]


def containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def test_it_is_a_ray_io_v1_raycluster_with_a_head_and_a_shard_worker_group(cluster: dict[str, Any]) -> None:
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["kind"] == "RayCluster"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cluster["metadata"]["name"])  # a DNS-1035 label
    spec = cluster["spec"]
    assert set(spec) >= {"rayVersion", "headGroupSpec", "workerGroupSpecs"}
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["rayStartParams"]["num-cpus"] == "0"  # no shard lands on the head
    workers = spec["workerGroupSpecs"]
    assert [w["groupName"] for w in workers] == ["iotix-shards"]
    group = workers[0]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert int(group["rayStartParams"]["num-cpus"]) >= 1


def test_every_ray_start_param_is_a_string(cluster: dict[str, Any]) -> None:
    # KubeRay wants strings here ("0", not 0): a number is rejected by the CRD's validation
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]


def test_containers_have_the_same_image_of_the_cluster_s_ray_version_and_sized_resources(
    cluster: dict[str, Any],
) -> None:
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    images = set()
    for group in groups:
        (container,) = containers(group)
        assert container["name"] in ("ray-head", "ray-worker")
        images.add(container["image"])
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) >= {"cpu", "memory"}
            assert all(QUANTITY.match(str(v)) for v in resources[kind].values()), resources[kind]
        assert resources["requests"] == resources["limits"]  # Guaranteed QoS: shards are not evicted first
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert int(env["RAY_START_ULIMIT_OPEN_FILES"]) >= 65536
    assert len(images) == 1
    (image,) = images
    assert cluster["spec"]["rayVersion"] in image
    worker = cluster["spec"]["workerGroupSpecs"][0]
    assert int(worker["rayStartParams"]["num-cpus"]) == int(containers(worker)[0]["resources"]["limits"]["cpu"])
    ports = {p["name"]: p["containerPort"] for p in containers(cluster["spec"]["headGroupSpec"])[0]["ports"]}
    assert ports == {"gcs": 6379, "dashboard": 8265, "client": 10001}


def test_worker_pods_widen_the_ephemeral_port_range_with_a_safe_sysctl(cluster: dict[str, Any]) -> None:
    sysctls = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["securityContext"]["sysctls"]
    assert {"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"} in sysctls


def test_the_dockerfile_builds_the_cluster_s_ray_version_with_the_cluster_extra(cluster: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert f"ARG RAY_VERSION={cluster['spec']['rayVersion']}" in text
    assert "FROM rayproject/ray:${RAY_VERSION}" in text
    assert '[cluster]"' in text
