"""``zoo k8s``: Kubernetes manifests that run a bundle's evaluation or training on Ascend or NVIDIA nodes.

Pure functions build plain dicts (``eval_job``, ``training_jobs``, ``pytorch_job``; ``manifests`` picks the form
the bundle needs); ``render_yaml`` turns them into multi-document YAML. Every pod runs torchrun through the image's
entrypoint (which sources CANN's set_env.sh on Ascend images, so ``args`` is set and ``command`` never is):

- one node: ``torchrun --nproc-per-node N --standalone -m common eval|train <bundle> ...``;
- M nodes: an Indexed Job (completions = parallelism = M) plus a headless Service; the pod template's ``subdomain``
  gives pod i the DNS name ``<job>-i.<service>``, and every pod meets at the c10d rendezvous on pod 0;
- ``--pytorchjob`` (training bundles): a Kubeflow ``PyTorchJob`` (kubeflow.org/v1), whose operator injects
  MASTER_ADDR / MASTER_PORT / RANK; the rendezvous runs on the Master's port.

Pods request the accelerator's device-plugin resource, mount the Ascend driver files ``zoo doctor`` knows
(common/doctor.py) read-only, the dataset read-only at /data and a writable results volume at /results, run as
the images' non-root user with no capabilities, and get a memory-backed /dev/shm for DataLoader workers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import click
import yaml

from common import doctor
from common.errors import ZooError
from common.images import image_tag
from common.manifest import bundle_manifest, bundle_names
from common.training.launch import LaunchSpec, torchrun_args, train_args

# The uid/gid of the non-root user every zoo image runs as (`USER 1000`; docker/shared-steps.Dockerfile creates
# it, or reuses the CANN images' HwHiAiUser, also 1000). tests/test_k8s.py holds every Dockerfile to it.
IMAGE_UID = 1000
RDZV_PORT = 29400  # torchrun's conventional c10d rendezvous port
PYTORCHJOB_PORT = 23456  # the Kubeflow training operator's default master port (port name "pytorchjob-port")
DATA_MOUNT = "/data"
RESULTS_MOUNT = "/results"
CONTAINER = "zoo"
LABEL_PREFIX = "ascend-zoo"
# Job names become pod hostnames `<job>-<index>` / `<job>-master-0` (DNS labels, at most 63 characters).
MAX_NAME = 52
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class Accelerator:
    """A kind of accelerator node: its device-plugin resource, torch device kind and image target."""

    name: str
    resource: str  # the extended resource its device plugin advertises
    device: str  # `--device` of `zoo eval|train`
    target: str  # the bundle Dockerfile target the default image is built from
    chip: str | None = None  # Ascend: the chip family the CANN base image must be built for ("310p", "910b")


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator("ascend-310p", "huawei.com/Ascend310P", "npu", "ascend", "310p"),
        Accelerator("ascend-910b", "huawei.com/Ascend910", "npu", "ascend", "910b"),
        # No CUDA target exists: the cpu image is the default and carries a CPU torch (see image_warnings).
        Accelerator("nvidia", "nvidia.com/gpu", "cuda", "cpu"),
    )
}


@dataclass(frozen=True)
class K8sSpec:
    """What to run where: the options of ``zoo k8s``. Checked on construction (ZooError naming the option)."""

    bundle: str
    accelerator: str
    devices: int
    nodes: int = 1
    pytorchjob: bool = False
    image: str | None = None
    data_pvc: str | None = None
    data_host_path: str | None = None
    results_pvc: str | None = None
    namespace: str | None = None
    name: str | None = None  # the Job's name [<bundle>-eval | <bundle>-train]
    device_group: int | None = None  # gid owning /dev/davinci* on the nodes (doctor's --group-add)
    cpu_per_device: int = 8
    memory_per_device_gi: int = 32
    extra_args: tuple[str, ...] = ()  # appended to every rank's `zoo eval|train` command line
    commit: str | None = None  # the zoo commit annotation [common.report.zoo_commit()]

    def __post_init__(self) -> None:
        if self.bundle not in bundle_names():
            raise ZooError(f"unknown bundle {self.bundle!r}; known bundles: {', '.join(bundle_names())}")
        if self.accelerator not in ACCELERATORS:
            raise ZooError(f"--accelerator {self.accelerator!r}: unknown; choose one of {', '.join(ACCELERATORS)}")
        for opt, value in (("--devices", self.devices), ("--nodes", self.nodes),
                           ("--cpu-per-device", self.cpu_per_device),
                           ("--memory-per-device", self.memory_per_device_gi)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ZooError(f"{opt} {value!r}: must be a whole number of at least 1")
        if self.data_pvc and self.data_host_path:
            raise ZooError("--data-pvc and --data-host-path: give one dataset source, not both")
        if not (self.data_pvc or self.data_host_path):
            raise ZooError("no dataset: give --data-pvc NAME (a PersistentVolumeClaim holding the dataset) or "
                           "--data-host-path PATH (the dataset's directory on every node); it is mounted "
                           f"read-only at {DATA_MOUNT}")
        if self.data_host_path is not None and not self.data_host_path.startswith("/"):
            raise ZooError(f"--data-host-path {self.data_host_path!r}: must be an absolute path on the nodes")
        if self.nodes > 1 and not self.results_pvc:
            raise ZooError(f"--nodes {self.nodes} needs --results-pvc (a ReadWriteMany claim): every node writes "
                           f"into the same run directory {RESULTS_MOUNT}/{self.job_name}, which a per-pod "
                           "emptyDir cannot share")
        for opt, value in (("--data-pvc", self.data_pvc), ("--results-pvc", self.results_pvc),
                           ("--namespace", self.namespace)):
            if value is not None and not _dns_label(value):
                raise ZooError(f"{opt} {value!r}: not a valid Kubernetes name (lower-case letters, digits and "
                               "'-', starting with a letter, at most 63 characters)")
        if not _dns_label(self.job_name) or len(self.job_name) > MAX_NAME:
            raise ZooError(f"--name {self.job_name!r}: not a valid job name (lower-case letters, digits and '-', "
                           f"starting with a letter, at most {MAX_NAME} characters: pod hostnames add a suffix)")
        if self.device_group is not None and self.device_group < 0:
            raise ZooError(f"--device-group {self.device_group}: a group id is never negative")

    @property
    def acc(self) -> Accelerator:
        return ACCELERATORS[self.accelerator]

    @cached_property  # the manifest is read once per spec
    def training(self) -> bool:
        """True for a training bundle (manifest ``[bundle] task = "training"``)."""
        return bundle_manifest(self.bundle).bundle.task == "training"

    @property
    def job_name(self) -> str:
        return self.name or f"{self.bundle.replace('_', '-')}-{'train' if self.training else 'eval'}"

    @property
    def image_ref(self) -> str:
        return self.image or image_tag(self.bundle, self.acc.target)

    @property
    def out_dir(self) -> str:
        return f"{RESULTS_MOUNT}/{self.job_name}"


def _dns_label(value: str) -> bool:
    return len(value) <= 63 and _DNS_LABEL.fullmatch(value) is not None


def _commit(spec: K8sSpec) -> str:
    if spec.commit is not None:
        return spec.commit
    from common.report import zoo_commit  # imported here: common.report pulls in torch

    return zoo_commit()


def image_warnings(spec: K8sSpec) -> list[str]:
    """What is known to be wrong with the default image for this accelerator (none when --image is given)."""
    if spec.image:
        return []
    if spec.acc.chip is None:
        return [f"{spec.image_ref} is the cpu target: its torch is a CPU build, so `--device cuda` fails in it; "
                "pass --image with an image of this bundle whose torch has CUDA"]
    base = bundle_manifest(spec.bundle).pinned_env.get("ascend_base_image", "")
    if spec.acc.chip not in base.lower():
        return [f"{spec.image_ref} is built FROM {base} (manifest pinned_env.ascend_base_image), not a CANN image "
                f"for the {spec.acc.chip.upper()}: rebuild it with --build-arg ASCEND_BASE_IMAGE=<a "
                f"{spec.acc.chip} CANN image> or pass --image"]
    return []


def spec_warnings(spec: K8sSpec) -> list[str]:
    """Everything ``zoo k8s`` warns about on stderr: the image's, and results that vanish with the pod."""
    out = image_warnings(spec)
    if not spec.results_pvc:
        out.append(f"no --results-pvc: {RESULTS_MOUNT} is an emptyDir, so the run directory is lost when the pod "
                   "is deleted (copy it out with kubectl cp first, or give a claim)")
    return out


# ------------------------------------------------------------------------------------------------ pod pieces


def labels(spec: K8sSpec) -> dict[str, str]:
    """Labels of every object and pod: the bundle, the job and what it does."""
    return {
        "app.kubernetes.io/name": spec.bundle.replace("_", "-"),
        "app.kubernetes.io/instance": spec.job_name,
        "app.kubernetes.io/component": "training" if spec.training else "evaluation",
        "app.kubernetes.io/part-of": "ascend-zoo",
        f"{LABEL_PREFIX}/bundle": spec.bundle,
        f"{LABEL_PREFIX}/accelerator": spec.accelerator,
    }


def _selector(spec: K8sSpec) -> dict[str, str]:
    return {k: labels(spec)[k] for k in ("app.kubernetes.io/instance", "app.kubernetes.io/part-of")}


def _metadata(spec: K8sSpec, name: str, commit: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if spec.namespace:
        meta["namespace"] = spec.namespace
    meta["labels"] = labels(spec)
    meta["annotations"] = {f"{LABEL_PREFIX}/commit": commit, f"{LABEL_PREFIX}/image": spec.image_ref}
    return meta


def _volumes(spec: K8sSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts): dataset read-only, results writable, /dev/shm in memory, Ascend driver files."""
    if spec.data_pvc:
        data: dict[str, Any] = {"name": "data", "persistentVolumeClaim": {"claimName": spec.data_pvc,
                                                                           "readOnly": True}}
    else:
        data = {"name": "data", "hostPath": {"path": spec.data_host_path, "type": "Directory"}}
    if spec.results_pvc:
        results: dict[str, Any] = {"name": "results", "persistentVolumeClaim": {"claimName": spec.results_pvc}}
    else:
        results = {"name": "results", "emptyDir": {}}
    # DataLoader workers pass batches through /dev/shm; the runtime's default 64 MiB is far too small. Memory-backed,
    # so it counts against the memory limit: half of it at most.
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory",
                                        "sizeLimit": f"{spec.devices * spec.memory_per_device_gi // 2}Gi"}}
    volumes = [data, results, shm]
    mounts = [
        {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
        {"name": "results", "mountPath": RESULTS_MOUNT},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if spec.acc.chip is not None:
        # The device plugin injects /dev/davinciN and the management devices (doctor.MANAGEMENT_DEVICES); the driver
        # libraries, npu-smi, dcmi and the version files come from the host, read-only (doctor.DRIVER_MOUNTS).
        for i, path in enumerate(doctor.DRIVER_MOUNTS):
            kind = "Directory" if path in doctor.DRIVER_MOUNT_DIRS else "File"
            volumes.append({"name": f"ascend-driver-{i}", "hostPath": {"path": path, "type": kind}})
            mounts.append({"name": f"ascend-driver-{i}", "mountPath": path, "readOnly": True})
    return volumes, mounts


def _resources(spec: K8sSpec) -> dict[str, dict[str, str]]:
    # Limits == requests: Guaranteed QoS, which the kubelet's topology manager needs to keep CPUs and memory on the
    # devices' NUMA node. Extended resources (the devices) must be equal in both anyway.
    amounts = {
        "cpu": str(spec.devices * spec.cpu_per_device),
        "memory": f"{spec.devices * spec.memory_per_device_gi}Gi",
        spec.acc.resource: str(spec.devices),
    }
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _pod_security(spec: K8sSpec) -> dict[str, Any]:
    sc: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "fsGroup": IMAGE_UID,  # makes the results claim writable for the image's user
        "fsGroupChangePolicy": "OnRootMismatch",  # never walk a whole dataset claim to chown it
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.device_group is not None:
        sc["supplementalGroups"] = [spec.device_group]
    return sc


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _zoo_args(spec: K8sSpec) -> list[str]:
    """The `zoo` arguments every rank runs (after `-m common`)."""
    if spec.training:
        return train_args(spec.bundle, spec.out_dir, {}, "--data", DATA_MOUNT, *spec.extra_args,
                          device=spec.acc.device, workers=max(1, spec.cpu_per_device // 2))
    # The backend that runs on the accelerator: OMs through ais_bench on Ascend (each rank builds its OM with
    # ATC, or reuses `-- --om-dir ...`), eager torch on CUDA. `-- --backend ...` overrides (click takes the last).
    backend = "ais_bench" if spec.acc.device == "npu" else "torch"
    return ["eval", spec.bundle, "--device", spec.acc.device, "--backend", backend, "--data", DATA_MOUNT,
            "--out", spec.out_dir, *spec.extra_args]


def _torchrun(spec: K8sSpec, endpoint: str | None, node_rank: str) -> list[str]:
    """`torchrun <options> -m common <zoo args>`; node_rank is a $(VAR) the kubelet expands in each pod."""
    opts = torchrun_args(LaunchSpec(nproc_per_node=spec.devices, nnodes=spec.nodes, rdzv_endpoint=endpoint,
                                    rdzv_id=spec.job_name))
    if "--node-rank" in opts:  # LaunchSpec holds a number; each pod learns its rank only at run time
        opts[opts.index("--node-rank") + 1] = node_rank
    return ["torchrun", *opts, "-m", "common", *_zoo_args(spec)]


def _container(spec: K8sSpec, name: str, args: list[str], env: list[dict[str, Any]],
               ports: list[dict[str, Any]]) -> dict[str, Any]:
    _, mounts = _volumes(spec)
    c: dict[str, Any] = {
        "name": name,
        "image": spec.image_ref,
        "imagePullPolicy": "IfNotPresent",
        "args": args,  # not `command`: the image's entrypoint sources CANN's set_env.sh, then runs these
        "env": [
            {"name": "ZOO_CACHE", "value": f"{RESULTS_MOUNT}/.cache"},  # the images' /out/.cache is not mounted
            {"name": "OMP_NUM_THREADS", "value": str(spec.cpu_per_device)},  # torchrun would force 1
            *env,
        ],
        "resources": _resources(spec),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    if ports:
        c["ports"] = ports
    return c


def _pod_template(spec: K8sSpec, commit: str, container: dict[str, Any], *, restart: str = "Never",
                  subdomain: str | None = None) -> dict[str, Any]:
    volumes, _ = _volumes(spec)
    pod: dict[str, Any] = {"restartPolicy": restart}
    if subdomain:
        pod["subdomain"] = subdomain
    pod.update({"securityContext": _pod_security(spec), "containers": [container], "volumes": volumes})
    meta = {"labels": labels(spec), "annotations": {f"{LABEL_PREFIX}/commit": commit}}
    return {"metadata": meta, "spec": pod}


# ------------------------------------------------------------------------------------------------- the forms


def rendezvous_endpoint(spec: K8sSpec) -> str:
    """`<job>-0.<service>:29400`: pod 0 of the Indexed Job, by its DNS name under the headless Service."""
    return f"{spec.job_name}-0.{spec.job_name}:{RDZV_PORT}"


def headless_service(spec: K8sSpec, commit: str) -> dict[str, Any]:
    """The headless Service (named like the Job) that gives each pod the DNS name `<job>-<index>.<job>`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, spec.job_name, commit),
        "spec": {
            "clusterIP": "None",
            # pods must resolve while they start, before any readiness: the rendezvous happens then
            "publishNotReadyAddresses": True,
            "selector": _selector(spec),
            "ports": [{"name": "rdzv", "port": RDZV_PORT, "targetPort": RDZV_PORT, "protocol": "TCP"}],
        },
    }


def _indexed_job(spec: K8sSpec) -> list[dict[str, Any]]:
    commit = _commit(spec)
    multi = spec.nodes > 1
    env, ports = [], []
    if multi:
        # Declared explicitly (the Job controller adds it too, and skips it when present) so that the kubelet's
        # $(JOB_COMPLETION_INDEX) expansion in args never depends on the controller's version.
        env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
        ports.append({"name": "rdzv", "containerPort": RDZV_PORT, "protocol": "TCP"})
    args = _torchrun(spec, rendezvous_endpoint(spec) if multi else None, "$(JOB_COMPLETION_INDEX)")
    template = _pod_template(spec, commit, _container(spec, CONTAINER, args, env, ports),
                             subdomain=spec.job_name if multi else None)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(spec, spec.job_name, commit),
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.nodes,
            "parallelism": spec.nodes,
            # one torchrun group: a lost pod fails the whole run (resume from resume.pth), never a lone restart
            "backoffLimit": 0,
            "template": template,
        },
    }
    return [headless_service(spec, commit), job] if multi else [job]


def eval_job(spec: K8sSpec) -> list[dict[str, Any]]:
    """An inference bundle's sharded evaluation: [headless Service (nodes > 1), Indexed Job]."""
    if spec.training:
        raise ZooError(f"{spec.bundle} is a training bundle: use training_jobs (or --pytorchjob)")
    return _indexed_job(spec)


def training_jobs(spec: K8sSpec) -> list[dict[str, Any]]:
    """A training bundle's run on `nodes` x `devices`: [headless Service (nodes > 1), Indexed Job]."""
    if not spec.training:
        raise ZooError(f"{spec.bundle} is an inference bundle: nothing to train (zoo k8s writes its evaluation)")
    return _indexed_job(spec)


def pytorch_job(spec: K8sSpec) -> dict[str, Any]:
    """The Kubeflow PyTorchJob (kubeflow.org/v1) form of a training: Master + (nodes - 1) Workers."""
    if not spec.training:
        raise ZooError(f"--pytorchjob: {spec.bundle} is an inference bundle; PyTorchJob runs training bundles only")
    commit = _commit(spec)
    # The operator sets MASTER_ADDR/MASTER_PORT (the Master's service and pytorchjob-port) and RANK (0 on the
    # Master, 1.. on Workers) in every pod; the kubelet expands them in args.
    endpoint = "$(MASTER_ADDR):$(MASTER_PORT)" if spec.nodes > 1 else None
    ports = [{"name": "pytorchjob-port", "containerPort": PYTORCHJOB_PORT, "protocol": "TCP"}]
    # The operator finds its container by the name "pytorch".
    container = _container(spec, "pytorch", _torchrun(spec, endpoint, "$(RANK)"), [], ports)
    template = _pod_template(spec, commit, container)
    replicas: dict[str, Any] = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if spec.nodes > 1:
        replicas["Worker"] = {"replicas": spec.nodes - 1, "restartPolicy": "Never", "template": template}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": _metadata(spec, spec.job_name, commit),
        "spec": {
            "nprocPerNode": str(spec.devices),  # a string in kubeflow.org/v1 (it also takes "auto")
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": replicas,
        },
    }


def manifests(spec: K8sSpec) -> list[dict[str, Any]]:
    """Every object `zoo k8s` writes for ``spec``, in the order to apply them."""
    if spec.pytorchjob:
        return [pytorch_job(spec)]
    return training_jobs(spec) if spec.training else eval_job(spec)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # shared sub-dicts are written out, never as &id001 anchors
        return True


def render_yaml(objs: Sequence[dict[str, Any]]) -> str:
    """Multi-document YAML (`---` before each object), keys in the order built."""
    return yaml.dump_all(list(objs), Dumper=_Dumper, sort_keys=False, explicit_start=True, width=120)


def write_manifests(objs: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One file per object, numbered so that `kubectl apply -f DIR` creates them in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, obj in enumerate(objs):
        path = out_dir / f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(render_yaml([obj]))
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------------ CLI


@click.command("k8s", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Choice(bundle_names()))
@click.argument("extra_args", nargs=-1, metavar="[-- ZOO_ARGS...]")
@click.option("--accelerator", type=click.Choice(list(ACCELERATORS)), required=True,
              help="Node kind: its device-plugin resource, torch device and default image.")
@click.option("--devices", type=click.IntRange(1), required=True, help="Devices (processes) per node.")
@click.option("--nodes", type=click.IntRange(1), default=1, show_default=True, help="Nodes (pods).")
@click.option("--pytorchjob", is_flag=True, help="Training bundles: a Kubeflow PyTorchJob instead of Jobs.")
@click.option("--image", help="Image [zoo/<bundle>:ascend on Ascend, zoo/<bundle>:cpu on nvidia].")
@click.option("--data-pvc", help="PersistentVolumeClaim holding the dataset (mounted read-only at /data).")
@click.option("--data-host-path", help="The dataset's directory on every node (mounted read-only at /data).")
@click.option("--results-pvc", help="Claim for the results (/results/<job>) [an emptyDir: lost with the pod]; "
              "needed for --nodes > 1 (ReadWriteMany).")
@click.option("--namespace", help="Namespace of every object [the kubectl context's].")
@click.option("--name", help="Job name [<bundle>-eval | <bundle>-train].")
@click.option("--device-group", type=click.IntRange(0), help="Group id owning /dev/davinci* on the nodes "
              "(added to the pods' groups, as doctor's --group-add).")
@click.option("--cpu-per-device", type=click.IntRange(1), default=8, show_default=True)
@click.option("--memory-per-device", "memory_per_device_gi", type=click.IntRange(1), default=32, show_default=True,
              help="GiB of memory per device (half of it at most for /dev/shm).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one YAML file per object here [multi-document YAML on stdout].")
def k8s_command(bundle: str, extra_args: tuple[str, ...], out_dir: Path | None, **options: Any) -> None:
    """Kubernetes manifests to evaluate (inference bundles: an Indexed Job) or train (training bundles: an Indexed
    Job, or a PyTorchJob) BUNDLE under torchrun on Ascend or NVIDIA nodes. ZOO_ARGS after `--` are appended to
    every rank's `zoo eval|train` line, e.g. `-- --weights /data/model.pth --backend ais_bench`."""
    spec = K8sSpec(bundle=bundle, extra_args=tuple(extra_args), **options)
    objs = manifests(spec)
    for warning in spec_warnings(spec):
        click.echo(f"warning: {warning}", err=True)
    if out_dir is None:
        click.echo(render_yaml(objs), nl=False)
        return
    for path in write_manifests(objs, out_dir):
        click.echo(str(path))
