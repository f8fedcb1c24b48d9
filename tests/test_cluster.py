"""`samsem segment --ray`: the cluster runner (samsem.runtime.cluster) on a local Ray instance.

Unit tests of the layout, URI listing and worker logic run without Ray; the rest share one local Ray
instance (ray.init(num_cpus=2)) and one reference run of the local command, and check that the Ray run
writes byte-identical masks and equal reports, resumes, survives a killed worker and an interrupted
driver. The two-node cluster test is in test_cluster_nodes.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from samsem.cli import main
from samsem.errors import ConfigError, InputError, SamsemError
from samsem.io import partial_files, read_mask, write_image
from samsem.runtime import cluster
from samsem.runtime.cluster import (
    MANIFEST,
    ClusterOptions,
    Layout,
    SegmentJob,
    SegmentWorker,
    list_inputs,
    list_uri,
    plan_layout,
    segment_inputs,
    segment_on_ray,
)
from samsem.runtime.config import RunOptions
from samsem.synth.generate import generate_sample

pytest.importorskip("ray", reason="needs the [dist] extra (Ray)")

N_IMAGES = 10
WAIT_S = 300  # upper bound of every wait for an event below: a hung run fails, a slow one passes


# ------------------------------------------------------------------------------------ helpers/fixtures


def run_records(out: Path) -> list[dict]:
    """The manifest's records of the last run in ``out``."""
    lines = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    starts = [i for i, r in enumerate(lines) if r.get("event") == "start"]
    return lines[starts[-1] :] if starts else []


def wait_for(what: str, event: Callable[[], object]) -> object:
    """Poll ``event`` until it returns a true value and return that; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not (value := event()):
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S} s"
        time.sleep(0.02)
    return value


def gated_worker(gate: Path) -> type[SegmentWorker]:
    """A SegmentWorker to patch into samsem.runtime.cluster: each call writes ``gate/PID.CALL.started``
    and waits for ``gate/PID.CALL.go`` (this call) or ``gate/release`` (all) before segmenting. Made in
    a function so that Ray pickles the class by value; its workers are other processes and meet the
    test only through files."""

    class GatedWorker(SegmentWorker):
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            call = f"{os.getpid()}.{self.calls}"
            (gate / f"{call}.started").touch()
            deadline = time.monotonic() + WAIT_S
            while not ((gate / f"{call}.go").exists() or (gate / "release").exists()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{gate}: call {call} not let through within {WAIT_S} s")
                time.sleep(0.02)
            return super().__call__(batch)

    return GatedWorker


def started_pids(gate: Path) -> set[int]:
    """The worker processes that have begun a call of a gated_worker."""
    return {int(p.name.split(".")[0]) for p in gate.glob("*.started")}


def assert_same_outputs(out: Path, reference: Path, names: list[str], *, uri_of=None) -> None:
    """Masks byte-identical, reports equal but for timings (and a remote input's name), no partials."""
    for stem in names:
        assert (out / f"{stem}.mask.png").read_bytes() == (reference / f"{stem}.mask.png").read_bytes(), stem
        got = json.loads((out / f"{stem}.report.json").read_text())
        want = json.loads((reference / f"{stem}.report.json").read_text())
        for r in (got, want):
            assert r.pop("timings_s")
        if uri_of is not None:
            assert got["input"] == got["name"] == uri_of(stem)
            got["input"], got["name"] = want["input"], want["name"]
        assert got == want, stem
    assert partial_files(out) == []


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray") / "images"
    for i in range(N_IMAGES):
        h, w = (256, 320) if i % 2 else (288, 256)
        write_image(folder / f"sem{i}.png", generate_sample("easy", h, w, seed=i).image)
    return folder


@pytest.fixture(scope="module")
def stems() -> list[str]:
    return [f"sem{i}" for i in range(N_IMAGES)]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "broken.png"
    path.write_text("not an image")
    return path


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local command's outputs (bundled default model) for ``images``."""
    out = tmp_path_factory.mktemp("ray") / "local"
    assert main(["segment", str(images), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A local Ray instance with 2 CPUs for this module's tests; its address."""
    import logging

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# ------------------------------------------------------------------------------------ without Ray


def test_layout_fills_cpus_or_gpus_and_refuses_what_does_not_fit() -> None:
    cpu_nodes = [{"CPU": 8.0}, {"CPU": 4.0}]
    assert plan_layout(cpu_nodes, "cpu", ClusterOptions(), calls=100) == Layout(12, 0.0, 1)
    assert plan_layout(cpu_nodes, "cpu", ClusterOptions(threads_per_worker=3), 100) == Layout(3, 0.0, 3)
    assert plan_layout(cpu_nodes, "cpu", ClusterOptions(), calls=5).workers == 5  # no idle actors
    gpu_nodes = [{"CPU": 64.0, "GPU": 8.0}, {"CPU": 32.0, "GPU": 8.0}, {"CPU": 16.0}]  # + a CPU head
    assert plan_layout(gpu_nodes, "cuda", ClusterOptions(), 1000) == Layout(16, 1.0, 4)
    assert plan_layout(gpu_nodes, "cuda", ClusterOptions(gpus_per_worker=0.5), 1000) == Layout(32, 0.5, 2)
    with pytest.raises(ConfigError, match="at most 12"):
        plan_layout(cpu_nodes, "cpu", ClusterOptions(workers=13), 100)
    with pytest.raises(ConfigError, match="no node"):
        plan_layout(cpu_nodes, "cuda", ClusterOptions(), 100)
    with pytest.raises(ConfigError, match="--device cuda"):
        plan_layout(gpu_nodes, "cuda:1", ClusterOptions(), 100)
    with pytest.raises(ConfigError, match="needs --device cuda"):
        plan_layout(gpu_nodes, "cpu", ClusterOptions(gpus_per_worker=1), 100)
    with pytest.raises(ConfigError, match="--workers"):
        ClusterOptions(workers=0)


def test_uri_listing_matches_files_folders_and_globs(tmp_path: Path) -> None:
    for rel in ("a/x1.png", "a/x2.tif", "a/notes.txt", "a/sub/y.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    base = f"file://{tmp_path}"
    assert list_uri(f"{base}/a") == [f"{base}/a/x1.png", f"{base}/a/x2.tif"]
    assert list_uri(f"{base}/a/*.png") == [f"{base}/a/x1.png"]
    assert list_uri(f"{base}/a/**.png") == [f"{base}/a/sub/y.png", f"{base}/a/x1.png"]
    assert list_uri(f"{base}/a/x2.tif") == [f"{base}/a/x2.tif"]
    assert list_inputs([f"{base}/a/x1.png", str(tmp_path / "a" / "x1.png"), f"{base}/a/*.png"]) == [
        str(tmp_path / "a" / "x1.png"),
        f"{base}/a/x1.png",
    ]
    for bad, why in [("a/none.png", "not found"), ("a/*.jpg", "matches no images"), ("a/notes.txt", "type")]:
        with pytest.raises(InputError, match=why) as err:
            list_uri(f"{base}/{bad}")
        assert f"{base}/{bad}" in str(err.value)  # the URI as given, not a mangled path
    with pytest.raises(InputError, match="cannot list"):
        list_uri("nosuchscheme://x/y.png")


def test_worker_logic_skips_finished_and_names_remote_inputs(
    images: Path, broken: Path, tmp_path: Path
) -> None:
    from samsem.runtime.load import load_pipeline

    pipeline = load_pipeline("classical")
    job = SegmentJob.create(tmp_path / "out", RunOptions(batch_size=4), model="classical")
    uri = f"file://{images}/sem1.png"
    inputs = [str(images / "sem0.png"), uri, str(broken), f"file://{images}/absent.png"]
    records = segment_inputs(pipeline, job, inputs)
    assert [r.status for r in records] == ["done", "done", "failed", "failed"]
    assert records[2].error.startswith(str(broken)) and "absent.png" in records[3].error
    assert json.loads((tmp_path / "out" / "sem1.report.json").read_text())["input"] == uri
    again = segment_inputs(pipeline, job, inputs[:2])
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert partial_files(tmp_path / "out") == []
    # asked for vector files later: written from the existing masks, as the local command does
    from samsem.vector import VectorOptions, read_layout_mask

    vector_job = replace(job, vector=VectorOptions(formats=("svg",), tolerance_px=0))
    assert [r.status for r in segment_inputs(pipeline, vector_job, inputs[:2])] == ["completed", "completed"]
    out = tmp_path / "out"
    np.testing.assert_array_equal(read_layout_mask(out / "sem0.mask.svg"), read_mask(out / "sem0.mask.png"))


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="2 cores"
)
def test_workers_pin_themselves_to_distinct_free_cores(tmp_path: Path) -> None:
    """Two processes asking for one thread each hold different cores; a third finds none free and
    is not pinned; numba then sizes its pool from the pinned affinity."""
    code = (
        "import sys; from samsem.runtime.cluster import pin_threads; cores = pin_threads(1)\n"
        "import json, numba; print(json.dumps([cores, numba.config.NUMBA_NUM_THREADS]), flush=True)\n"
        "sys.stdin.read()"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the lock files live in the temp folder
    procs = []
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        first, second = (json.loads(p.stdout.readline()) for p in procs if p.stdout is not None)
        assert first[1] == second[1] == 1 and len(first[0]) == len(second[0]) == 1 and first[0] != second[0]
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) == 2:
            third = subprocess.run(
                [sys.executable, "-c", code], input="", capture_output=True, text=True, env=env
            )
            assert json.loads(third.stdout)[0] == allowed
    finally:
        for p in procs:
            p.communicate("", timeout=30)


def test_ray_flags_need_ray(tmp_path: Path, capsys) -> None:
    assert main(["segment", str(tmp_path), "-o", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert "--workers need --ray" in capsys.readouterr().err
    folder = tmp_path / "imgs"
    folder.mkdir()
    # argparse gives --ray the first input when it comes before them
    assert main(["segment", "-o", str(tmp_path / "o"), "--ray", str(folder), str(folder)]) == 2
    assert "put --ray after the inputs" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ on Ray


def test_ray_run_equals_local_command_and_resumes(
    ray_address: str, images: Path, broken: Path, reference: Path, stems: list[str], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "ray"
    args = ["segment", str(images), str(broken), "-o", str(out), "--ray", "--workers", "2"]
    assert main(args) == 1  # the broken file fails, the batch goes on
    err = capsys.readouterr().err
    assert f"{N_IMAGES} segmented, 0 skipped (all outputs exist), 1 failed" in err
    local_err = f"FAILED broken.png: {broken}: "
    assert local_err in err
    assert_same_outputs(out, reference, stems)
    records = run_records(out)
    assert records[0]["event"] == "start" and records[0]["workers"] == 2
    assert records[-1] | {"seconds": 0} == {
        "event": "end", "run": records[0]["run"], "segmented": N_IMAGES, "skipped": 0, "failed": 1,
        "seconds": 0, "outcome": "finished",
    }  # fmt: skip
    by_input = {r["input"]: r for r in records[1:-1]}
    assert len(by_input) == len(records) - 2 == N_IMAGES + 1  # each input exactly once
    assert by_input[str(broken)]["status"] == "failed" and str(broken) in by_input[str(broken)]["error"]

    # resume: two images lose an output, a killed writer's temporary file is lying around; the rerun
    # names the inputs by URI (read through pyarrow.fs): they are redone with the same masks
    (out / "sem3.report.json").unlink()
    (out / "sem4.mask.png").unlink()
    (out / ".sem5.0123456789ab.tmp.png").write_bytes(b"partial")
    uri = f"file://{images}/sem*.png"
    assert main(["segment", uri, "-o", str(out), "--ray", "--images-per-call", "3"]) == 0
    assert f"2 segmented, {N_IMAGES - 2} skipped" in capsys.readouterr().err
    assert_same_outputs(out, reference, [s for s in stems if s not in ("sem3", "sem4")])
    assert_same_outputs(out, reference, ["sem3", "sem4"], uri_of=lambda s: f"file://{images}/{s}.png")
    redone = [r for r in run_records(out) if r.get("status") == "done"]
    assert sorted(r["input"] for r in redone) == [f"file://{images}/sem{i}.png" for i in (3, 4)]


def test_killed_worker_is_restarted_and_its_images_redone(
    ray_address: str, images: Path, reference: Path, stems: list[str], tmp_path: Path, monkeypatch
) -> None:
    """Both workers hold a task at the gate; one is killed: Ray restarts it (a new process) and retries
    its task there; once released, every image is done once with the local command's outputs."""
    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setattr(cluster, "SegmentWorker", gated_worker(gate))
    out = tmp_path / "out"
    job = SegmentJob.create(out, RunOptions())
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["run"] = segment_on_ray([str(images)], job, ClusterOptions(workers=2), progress=False)
        except BaseException as exc:  # reported by the test, not lost in the thread
            result["error"] = exc

    def started() -> set[int]:
        assert runner.is_alive() or "run" in result, result.get("error")
        return started_pids(gate)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        first = wait_for("both workers at the gate", lambda: len(started()) == 2 and started())
        killed, survivor = sorted(first)
        os.kill(killed, signal.SIGKILL)
        restarted = wait_for("the killed worker's task retried", lambda: started() - first)
    finally:
        (gate / "release").touch()
        runner.join(WAIT_S)
    assert not runner.is_alive() and "error" not in result, result.get("error")
    run = result["run"]
    assert sorted(r.input for r in run.records) == sorted(str(images / f"{s}.png") for s in stems)
    assert {r.status for r in run.records} == {"done"} and run.summary.done == N_IMAGES
    assert not run.summary.failures
    assert len(restarted) == 1 and {r.pid for r in run.records} == {survivor, *restarted}
    assert_same_outputs(out, reference, stems)


def test_interrupted_driver_leaves_whole_files_and_the_rerun_completes(
    ray_address: str, images: Path, reference: Path, stems: list[str], tmp_path: Path, capsys
) -> None:
    """Ctrl-C on a driver that has logged an image while its one worker holds a call at the gate: exit
    130, the manifest says interrupted, the outputs are whole; the rerun does the rest."""
    # the driver logs a task's images when the task ends, and a task may hold several calls: the test
    # lets calls through one by one until an image is logged, then holds the next one
    copies = tmp_path / "copies"
    copies.mkdir()
    for k in range(4):
        for stem in stems:
            shutil.copyfile(images / f"{stem}.png", copies / f"c{k}_{stem}.png")
    n = 4 * N_IMAGES

    def assert_mask_of_original(stem: str) -> None:
        original = stem.split("_", 1)[1]
        assert (out / f"{stem}.mask.png").read_bytes() == (reference / f"{original}.mask.png").read_bytes()

    gate = tmp_path / "gate"
    gate.mkdir()
    out = tmp_path / "out"
    driver_code = (
        "import runpy, sys\n"
        "from pathlib import Path\n"
        "from samsem.cli import main\n"
        "from samsem.runtime import cluster\n"
        f"gated_worker = runpy.run_path({__file__!r})['gated_worker']\n"
        f"cluster.SegmentWorker = gated_worker(Path({str(gate)!r}))\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    args = ["segment", str(copies), "-o", str(out), f"--ray={ray_address}", "--workers", "1"]
    log = tmp_path / "driver.err"
    with open(log, "w") as err:
        driver = subprocess.Popen([sys.executable, "-c", driver_code, *args], stderr=err, text=True)

    def logged_and_holding() -> bool:
        assert driver.poll() is None, log.read_text()
        waiting = [p for p in gate.glob("*.started") if not p.with_suffix(".go").exists()]
        if (out / MANIFEST).exists() and any(r.get("event") == "image" for r in run_records(out)):
            return bool(waiting)
        for p in waiting:
            p.with_suffix(".go").touch()
        return False

    try:
        wait_for("an image logged and the next call held", logged_and_holding)
        driver.send_signal(signal.SIGINT)
        code = driver.wait(WAIT_S)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    stderr = log.read_text()
    assert code == 130, stderr
    assert "interrupted; finished outputs are kept" in stderr
    end = run_records(out)[-1]
    assert end["event"] == "end" and end["outcome"] == "interrupted" and 1 <= end["segmented"] < n
    finished = sorted(p.name.removesuffix(".report.json") for p in out.glob("*.report.json"))
    assert len(finished) >= end["segmented"]
    for stem in finished:  # whatever exists is whole
        assert_mask_of_original(stem)

    assert main(["segment", str(copies), "-o", str(out), "--ray"]) == 0
    err_text = capsys.readouterr().err
    assert f"{n - len(finished)} segmented, {len(finished)} skipped (all outputs exist), 0 failed" in err_text
    for image in copies.iterdir():
        assert_mask_of_original(image.stem)
    assert partial_files(out) == []
    records = run_records(out)
    assert len(records) == n + 2
    skipped = sorted(Path(r["input"]).stem for r in records if r.get("status") == "skipped")
    assert skipped == finished


def test_a_model_that_cannot_load_fails_the_run_at_once(
    ray_address: str, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    job = SegmentJob.create(out, RunOptions(), model=str(tmp_path / "absent.pt"))
    with pytest.raises(SamsemError, match=r"workers could not start: .*absent.pt: model file not found"):
        segment_on_ray([str(images)], job, ClusterOptions(workers=1), progress=False)
    assert run_records(out)[-1]["outcome"] == "failed"
