"""`zoo k8s` (common/k8s.py): the manifests validate against the Kubernetes API schema offline
(kubernetes-validate) and say what the cluster needs: device resources, non-root, read-only data, the torchrun
rendezvous through the headless Service, the Ascend driver mounts `zoo doctor` knows."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from common import doctor
from common.errors import ZooError
from common.k8s import (
    ACCELERATORS,
    IMAGE_UID,
    RDZV_PORT,
    K8sSpec,
    eval_job,
    image_warnings,
    k8s_command,
    manifests,
    pytorch_job,
    render_yaml,
    spec_warnings,
    training_jobs,
)
from common.manifest import bundle_manifest, bundle_names

# The oldest and the newest API schemas kubernetes-validate 1.37.0 ships: the manifests hold on both.
K8S_VERSIONS = ("1.25", "1.37")
BUNDLES = bundle_names()
TRAINING = [b for b in BUNDLES if bundle_manifest(b).bundle.task == "training"]
DEVICES = 8
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOURCE = {"ascend-310p": "huawei.com/Ascend310P", "ascend-910b": "huawei.com/Ascend910", "nvidia": "nvidia.com/gpu"}
DEVICE_KIND = {"ascend-310p": "npu", "ascend-910b": "npu", "nvidia": "cuda"}


def _spec(bundle: str, accelerator: str, nodes: int = 1, **kw) -> K8sSpec:
    kw.setdefault("data_pvc", "datasets")
    if nodes > 1:
        kw.setdefault("results_pvc", "results")
    return K8sSpec(bundle=bundle, accelerator=accelerator, devices=DEVICES, nodes=nodes, commit=COMMIT, **kw)


def _validate(obj: dict) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')} invalid for Kubernetes {version}: "
                        f"{path}: {e.message}")


def _by_kind(objs: list[dict]) -> dict[str, dict]:
    kinds = [o["kind"] for o in objs]
    assert len(set(kinds)) == len(kinds), kinds
    return {o["kind"]: o for o in objs}


def _templates(objs: list[dict]) -> list[dict]:
    """Every pod template of the objects (Job or PyTorchJob replicas)."""
    out = []
    for o in objs:
        if o["kind"] == "Job":
            out.append(o["spec"]["template"])
        elif o["kind"] == "PyTorchJob":
            out += [r["template"] for r in o["spec"]["pytorchReplicaSpecs"].values()]
    assert out, [o["kind"] for o in objs]
    return out


def _container(template: dict) -> dict:
    (c,) = template["spec"]["containers"]
    return c


def _opt(args: list[str], name: str) -> str:
    assert args.count(name) == 1, (name, args)
    return args[args.index(name) + 1]


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """(torchrun options, zoo arguments) of `torchrun OPTS -m common ZOO_ARGS`."""
    assert args[0] == "torchrun", args
    i = args.index("-m")
    assert args[i + 1] == "common", args
    return args[1:i], args[i + 2:]


CASES = [(b, a, n) for b in BUNDLES for a in ACCELERATORS for n in (1, 2)]
PYTORCHJOB_CASES = [(b, a, n) for b in TRAINING for a in ACCELERATORS for n in (1, 2)]


def test_the_matrix_covers_both_kinds_of_bundle():
    assert TRAINING and set(TRAINING) < set(BUNDLES)
    assert set(ACCELERATORS) == set(RESOURCE)


# ---------------------------------------------------------------------------------------- schema validation


@pytest.mark.parametrize(("bundle", "accelerator", "nodes"), CASES)
def test_every_manifest_validates_and_round_trips_through_yaml(bundle, accelerator, nodes):
    objs = manifests(_spec(bundle, accelerator, nodes))
    assert [o["kind"] for o in objs] == (["Service", "Job"] if nodes > 1 else ["Job"])
    text = render_yaml(objs)
    assert "&id" not in text and "*id" not in text  # no YAML anchors: kubectl-friendly, readable
    docs = list(yaml.safe_load_all(text))
    assert docs == objs
    for obj in docs:
        _validate(obj)


def test_the_validator_rejects_a_broken_manifest():
    """Guards the check itself: strict validation fails on a misplaced field and a wrong type."""
    (job,) = manifests(_spec("refinedet", "ascend-310p"))
    job["spec"]["template"]["spec"]["containers"][0]["readOnly"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)
    (job,) = manifests(_spec("refinedet", "ascend-310p"))
    job["spec"]["completions"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(("bundle", "accelerator", "nodes"), PYTORCHJOB_CASES)
def test_pytorchjob_form(bundle, accelerator, nodes):
    spec = _spec(bundle, accelerator, nodes, pytorchjob=True)
    objs = manifests(spec)
    assert objs == [pytorch_job(spec)]
    (job,) = list(yaml.safe_load_all(render_yaml(objs)))
    # A CRD: no schema ships with kubernetes-validate, so its fields are checked here ...
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert set(job["spec"]) == {"nprocPerNode", "runPolicy", "pytorchReplicaSpecs"}
    assert job["spec"]["nprocPerNode"] == str(DEVICES)  # a string in kubeflow.org/v1
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == ({"Master", "Worker"} if nodes > 1 else {"Master"})
    assert replicas["Master"]["replicas"] == 1
    assert sum(r["replicas"] for r in replicas.values()) == nodes
    for r in replicas.values():
        assert set(r) == {"replicas", "restartPolicy", "template"}
        assert r["restartPolicy"] in ("Never", "OnFailure", "Always", "ExitCode")
        # ... and each pod template is validated as the core type it is, and as a Pod
        _validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": spec.job_name},
                   "template": r["template"]})
        _validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": spec.job_name, **r["template"]["metadata"]},
                   "spec": r["template"]["spec"]})
        c = _container(r["template"])
        assert c["name"] == "pytorch"  # the operator finds its container by this name
        assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in c["ports"]
        opts, zoo = _split(c["args"])
        assert _opt(opts, "--nproc-per-node") == str(DEVICES)
        if nodes > 1:
            assert _opt(opts, "--nnodes") == str(nodes)
            assert _opt(opts, "--rdzv-backend") == "c10d"
            assert _opt(opts, "--rdzv-endpoint") == "$(MASTER_ADDR):$(MASTER_PORT)"  # the operator's env
        else:
            assert "--standalone" in opts and "--nnodes" not in opts
        assert zoo[:2] == ["train", bundle]


# ------------------------------------------------------------------------------------------------ pod facts


@pytest.mark.parametrize(("bundle", "accelerator", "nodes", "pj"),
                         [(*c, False) for c in CASES] + [(*c, True) for c in PYTORCHJOB_CASES])
def test_pods_request_devices_run_non_root_and_mount_data_read_only(bundle, accelerator, nodes, pj):
    objs = manifests(_spec(bundle, accelerator, nodes, pytorchjob=pj))
    for t in _templates(objs):
        c = _container(t)
        res = c["resources"]
        assert res["requests"][RESOURCE[accelerator]] == str(DEVICES)
        assert res["limits"][RESOURCE[accelerator]] == str(DEVICES)
        others = set(RESOURCE.values()) - {RESOURCE[accelerator]}
        assert not others & (set(res["requests"]) | set(res["limits"]))
        assert res["requests"]["cpu"] == str(DEVICES * 8) and res["requests"]["memory"] == f"{DEVICES * 32}Gi"

        pod_sc, c_sc = t["spec"]["securityContext"], c["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and c_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] == c_sc["runAsUser"] == IMAGE_UID != 0
        assert c_sc["allowPrivilegeEscalation"] is False and c_sc["capabilities"]["drop"] == ["ALL"]
        assert not c_sc.get("privileged") and "add" not in c_sc["capabilities"]

        volumes = {v["name"]: v for v in t["spec"]["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/data"]["readOnly"] is True
        assert volumes[mounts["/data"]["name"]]["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
        assert not mounts["/results"].get("readOnly")
        results = volumes[mounts["/results"]["name"]]
        assert results == ({"name": "results", "persistentVolumeClaim": {"claimName": "results"}} if nodes > 1
                           else {"name": "results", "emptyDir": {}})
        assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
        assert not [p for p in mounts if p.startswith("/dev/") and p != "/dev/shm"]  # the device plugin's job

        host = {v["hostPath"]["path"] for v in t["spec"]["volumes"] if "hostPath" in v}
        ro = {p for p, m in mounts.items() if m.get("readOnly")}
        if accelerator.startswith("ascend"):
            assert host == set(doctor.DRIVER_MOUNTS)  # exactly what `zoo doctor` mounts for docker
            assert set(doctor.DRIVER_MOUNTS) <= ro
        else:
            assert not host and not set(doctor.DRIVER_MOUNTS) & set(mounts)


@pytest.mark.parametrize(("bundle", "accelerator", "nodes"), CASES)
def test_torchrun_command_and_rendezvous_through_the_headless_service(bundle, accelerator, nodes):
    spec = _spec(bundle, accelerator, nodes)
    kinds = _by_kind(manifests(spec))
    job = kinds["Job"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    pod = job["spec"]["template"]
    c = _container(pod)
    assert "command" not in c  # the image's entrypoint (CANN's set_env.sh) must run first
    opts, zoo = _split(c["args"])
    assert _opt(opts, "--nproc-per-node") == str(DEVICES)
    if nodes == 1:
        assert "--standalone" in opts and "--nnodes" not in opts and "Service" not in kinds
    else:
        svc = kinds["Service"]
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert pod["spec"]["subdomain"] == svc["metadata"]["name"]
        assert _opt(opts, "--nnodes") == str(nodes)
        assert _opt(opts, "--node-rank") == "$(JOB_COMPLETION_INDEX)"
        assert {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}} in c["env"]
        assert _opt(opts, "--rdzv-backend") == "c10d"
        host, port = _opt(opts, "--rdzv-endpoint").rsplit(":", 1)
        # pod 0 of an Indexed Job is <job>-0; under the Service's subdomain it resolves as <job>-0.<service>
        assert host == f"{job['metadata']['name']}-0.{svc['metadata']['name']}"
        assert int(port) == RDZV_PORT in [p["port"] for p in svc["spec"]["ports"]]
        assert RDZV_PORT in [p["containerPort"] for p in c["ports"]]
        assert _opt(opts, "--rdzv-id") == job["metadata"]["name"]
    training = bundle in TRAINING
    assert zoo[:2] == ["train" if training else "eval", bundle]
    assert _opt(zoo, "--device") == DEVICE_KIND[accelerator]
    assert _opt(zoo, "--data") == "/data"
    assert _opt(zoo, "--out") == f"/results/{job['metadata']['name']}"


def test_exact_command_of_a_two_node_ascend_evaluation():
    (_, job) = eval_job(_spec("refinedet", "ascend-310p", 2))
    assert _container(job["spec"]["template"])["args"] == [
        "torchrun", "--nproc-per-node", "8", "--nnodes", "2", "--node-rank", "$(JOB_COMPLETION_INDEX)",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "refinedet-eval-0.refinedet-eval:29400",
        "--rdzv-id", "refinedet-eval",
        "-m", "common", "eval", "refinedet", "--device", "npu", "--backend", "ais_bench", "--data", "/data",
            "--out", "/results/refinedet-eval",
    ]


def test_training_command_is_the_launchers_and_extra_args_reach_every_rank():
    (_, job) = training_jobs(_spec("sa_siam", "ascend-910b", 2, extra_args=("--set", "branch=appearance")))
    _, zoo = _split(_container(job["spec"]["template"])["args"])
    assert zoo == ["train", "sa_siam", "--out", "/results/sa-siam-train", "--device", "npu", "--workers", "4",
                   "--data", "/data", "--set", "branch=appearance"]
    (job,) = eval_job(_spec("pamtri", "nvidia", extra_args=("--weights", "/data/model_best.pth.tar")))
    assert _container(job["spec"]["template"])["args"][-2:] == ["--weights", "/data/model_best.pth.tar"]


def test_labels_annotations_and_host_path_data():
    spec = _spec("siamrpn", "ascend-310p", 2, data_pvc=None, data_host_path="/mnt/VOT2016", namespace="vision",
                 device_group=1001)
    for obj in manifests(spec):
        assert obj["metadata"]["namespace"] == "vision"
        assert obj["metadata"]["labels"]["ascend-zoo/bundle"] == "siamrpn"
        assert obj["metadata"]["annotations"]["ascend-zoo/commit"] == COMMIT
    (t,) = _templates(manifests(spec))
    assert t["metadata"]["labels"]["ascend-zoo/bundle"] == "siamrpn"
    assert t["metadata"]["annotations"]["ascend-zoo/commit"] == COMMIT
    assert t["spec"]["securityContext"]["supplementalGroups"] == [1001]
    (data,) = [v for v in t["spec"]["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "hostPath": {"path": "/mnt/VOT2016", "type": "Directory"}}
    for obj in manifests(spec):
        _validate(obj)


def test_commit_defaults_to_the_zoo_commit(monkeypatch):
    monkeypatch.setenv("ZOO_COMMIT", "feedface")
    spec = K8sSpec("refinedet", "nvidia", 1, data_pvc="voc")
    (job,) = manifests(spec)
    assert job["metadata"]["annotations"]["ascend-zoo/commit"] == "feedface"


def test_images_default_per_accelerator_and_warn_when_known_wrong():
    assert _spec("refinedet", "ascend-310p").image_ref == "zoo/refinedet:ascend"
    assert _spec("siamrpnpp", "ascend-910b").image_ref == "zoo/siamrpnpp:ascend"
    assert _spec("refinedet", "nvidia").image_ref == "zoo/refinedet:cpu"
    spec = _spec("refinedet", "nvidia", image="registry.example/zoo/refinedet:cuda12")
    (job,) = manifests(spec)
    assert _container(job["spec"]["template"])["image"] == "registry.example/zoo/refinedet:cuda12"
    assert image_warnings(spec) == []
    assert "CPU build" in image_warnings(_spec("refinedet", "nvidia"))[0]
    # the manifests pin a 310P CANN base for the inference bundles and a 910B one for the training bundles
    assert image_warnings(_spec("refinedet", "ascend-310p")) == []
    assert image_warnings(_spec("siamrpnpp", "ascend-910b")) == []
    assert "310p" in image_warnings(_spec("refinedet", "ascend-910b"))[0]


def test_run_as_user_is_the_uid_of_every_dockerfile():
    """runAsUser must be the images' USER: a different uid could not write the image's home or venv."""
    root = Path(__file__).resolve().parent.parent
    for bundle in BUNDLES:
        users = re.findall(r"^USER\s+(\S+)", (root / "bundles" / bundle / "Dockerfile").read_text(), re.M)
        assert users and {int(u) for u in users} == {IMAGE_UID}, (bundle, users)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("kw", "message"), [
    ({"accelerator": "tpu"}, r"--accelerator 'tpu': unknown; choose one of ascend-310p, ascend-910b, nvidia"),
    ({"devices": 0}, r"--devices 0: must be a whole number of at least 1"),
    ({"nodes": 0}, r"--nodes 0: must be"),
    ({"nodes": 2, "results_pvc": None}, r"--nodes 2 needs --results-pvc"),
    ({"data_pvc": None}, r"no dataset: give --data-pvc NAME .* or --data-host-path PATH"),
    ({"data_host_path": "/mnt/voc"}, r"give one dataset source, not both"),
    ({"data_pvc": None, "data_host_path": "data/voc"}, r"--data-host-path 'data/voc': must be an absolute path"),
    ({"name": "RefineDet_Eval"}, r"--name 'RefineDet_Eval': not a valid job name"),
    ({"name": "x" * 60}, r"at most 52 characters"),
    ({"namespace": "My Space"}, r"--namespace 'My Space': not a valid Kubernetes name"),
    ({"bundle": "yolo"}, r"unknown bundle 'yolo'"),
])
def test_bad_input_is_a_clear_error(kw, message):
    args = {"bundle": "refinedet", "accelerator": "ascend-310p", "devices": 1, "data_pvc": "voc", **kw}
    with pytest.raises(ZooError, match=message):
        K8sSpec(**args)


def test_form_must_fit_the_bundle():
    with pytest.raises(ZooError, match="--pytorchjob: refinedet is an inference bundle"):
        manifests(_spec("refinedet", "nvidia", pytorchjob=True))
    with pytest.raises(ZooError, match="siamrpnpp is a training bundle"):
        eval_job(_spec("siamrpnpp", "nvidia"))
    with pytest.raises(ZooError, match="refinedet is an inference bundle"):
        training_jobs(_spec("refinedet", "nvidia"))


# ------------------------------------------------------------------------------------------------------ CLI


def _invoke(args: list[str]):
    return CliRunner().invoke(k8s_command, args, env={"ZOO_COMMIT": COMMIT})


def test_cli_prints_the_manifests():
    r = _invoke(["siamrpnpp", "--accelerator", "ascend-910b", "--devices", "8", "--nodes", "2",
                 "--data-pvc", "training-data", "--results-pvc", "runs", "--", "--stop-after", "100"])
    assert r.exit_code == 0, r.output
    docs = list(yaml.safe_load_all(r.stdout))
    spec = K8sSpec("siamrpnpp", "ascend-910b", 8, nodes=2, data_pvc="training-data", results_pvc="runs",
                   extra_args=("--stop-after", "100"), commit=COMMIT)
    assert docs == manifests(spec)
    for obj in docs:
        _validate(obj)


def test_cli_pytorchjob_and_out_dir(tmp_path):
    r = _invoke(["sa_siam", "--accelerator", "nvidia", "--devices", "4", "--nodes", "3", "--pytorchjob",
                 "--data-host-path", "/data/vid", "--results-pvc", "runs", "--image", "me/sa:cuda",
                 "--out", str(tmp_path / "k8s")])
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "k8s").iterdir())
    assert [f.name for f in files] == ["00-pytorchjob-sa-siam-train.yaml"]
    (job,) = yaml.safe_load_all(files[0].read_text())
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert "warning" not in r.stderr  # --image given: nothing known to be wrong

    r = _invoke(["refinedet", "--accelerator", "nvidia", "--devices", "1", "--nodes", "2", "--data-pvc", "voc",
                 "--results-pvc", "runs", "--out", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    assert [f.name for f in sorted((tmp_path / "eval").iterdir())] == [
        "00-service-refinedet-eval.yaml", "01-job-refinedet-eval.yaml"]  # kubectl apply -f DIR: Service first
    assert "warning: zoo/refinedet:cpu is the cpu target" in r.stderr

    r = _invoke(["refinedet", "--accelerator", "ascend-310p", "--devices", "1", "--data-pvc", "voc"])
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("warning: no --results-pvc: /results is an emptyDir")
    assert spec_warnings(_spec("refinedet", "ascend-310p", results_pvc="runs")) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--accelerator", "tpu", "--devices", "1"], "'tpu' is not one of"),
    (["--accelerator", "nvidia", "--devices", "0"], "0 is not in the range x>=1"),
    (["--accelerator", "nvidia"], "Missing option '--devices'"),
])
def test_cli_usage_errors(args, message):
    r = _invoke(["refinedet", "--data-pvc", "voc", *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_cli_input_errors_are_zoo_errors():
    r = _invoke(["refinedet", "--accelerator", "nvidia", "--devices", "1", "--nodes", "2", "--data-pvc", "voc"])
    assert isinstance(r.exception, ZooError) and "--results-pvc" in str(r.exception)
    r = _invoke(["refinedet", "--accelerator", "nvidia", "--devices", "1", "--pytorchjob", "--data-pvc", "voc"])
    assert isinstance(r.exception, ZooError) and "inference bundle" in str(r.exception)
