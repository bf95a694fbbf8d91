"""Check generated Kubernetes objects against the API schemas (used by the test suite).

Built-in kinds: kubernetes-validate's strict schemas (unknown fields are errors) for Kubernetes
K8S_VERSION. LeaderWorkerSet: no package on PyPI ships its CRD, so LWS_SCHEMA below is written
by hand from the documented v1 API (kubernetes-sigs/lws, api/leaderworkerset/v1/
leaderworkerset_types.go: fields, kubebuilder enums and minimums), strict like the others, and
its pod templates are checked against the real, strict Kubernetes PodTemplateSpec schema.
"""

from __future__ import annotations

from .k8s import K8S_VERSION, LWS_API

DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"
LOCAL_KINDS = {"Values", "Kustomization"}  # kustomize's own inputs, never sent to the cluster


def _obj(properties: dict, required: tuple = ()) -> dict:
    return {"type": "object", "properties": properties, "additionalProperties": False, "required": list(required)}


def _int(minimum: int) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": 2**31 - 1}


def _enum(*values: str) -> dict:
    return {"type": "string", "enum": list(values)}


INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}

LWS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:dsv4-flash:schema:leaderworkerset.x-k8s.io:v1:LeaderWorkerSet",
    **_obj({
        "apiVersion": {"const": LWS_API},
        "kind": {"const": "LeaderWorkerSet"},
        "metadata": {"$ref": DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
        "spec": _obj({
            "replicas": _int(0),
            "startupPolicy": _enum("LeaderCreated", "LeaderReady"),
            "rolloutStrategy": _obj({
                "type": _enum("RollingUpdate"),
                "rollingUpdateConfiguration": _obj({"partition": _int(0), "maxUnavailable": INT_OR_STRING,
                                                    "maxSurge": INT_OR_STRING}),
            }, required=("type",)),
            "networkConfig": _obj({"subdomainPolicy": _enum("Shared", "UniquePerReplica")}, required=("subdomainPolicy",)),
            "leaderWorkerTemplate": _obj({
                "leaderTemplate": {"$ref": DEFS + "io.k8s.api.core.v1.PodTemplateSpec"},
                "workerTemplate": {"$ref": DEFS + "io.k8s.api.core.v1.PodTemplateSpec"},
                "size": _int(1),
                "restartPolicy": _enum("Default", "RecreateGroupOnPodRestart", "RecreateGroupAfterStart", "None"),
                "subGroupPolicy": _obj({"subGroupPolicyType": _enum("LeaderWorker", "LeaderExcluded"),
                                        "subGroupSize": _int(1)}),
                "volumeClaimTemplates": {"type": "array",
                                         "items": {"$ref": DEFS + "io.k8s.api.core.v1.PersistentVolumeClaim"}},
                "persistentVolumeClaimRetentionPolicy": {
                    "$ref": DEFS + "io.k8s.api.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicy"},
            }, required=("workerTemplate",)),
        }, required=("leaderWorkerTemplate",)),
        "status": {"type": "object"},
    }, required=("apiVersion", "kind", "spec")),
}


def _strict_definitions():
    import importlib.resources
    import json
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    return json.loads((root / "_definitions.json").read_text())


def lws_errors(obj: dict) -> list[str]:
    import jsonschema
    from referencing import Registry, Resource
    registry = Registry().with_resources([
        ("https://kubernetes.io/api/_definitions.json", Resource.from_contents(_strict_definitions())),
        (LWS_SCHEMA["$id"], Resource.from_contents(LWS_SCHEMA))])
    validator = jsonschema.Draft202012Validator(LWS_SCHEMA, registry=registry)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


def errors(obj: dict) -> list[str]:
    """Why `obj` is not a valid object of its kind (empty when it is)."""
    import kubernetes_validate
    if obj.get("apiVersion") == LWS_API:
        return lws_errors(obj)
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []
