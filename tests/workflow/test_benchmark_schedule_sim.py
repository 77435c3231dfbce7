"""benchmarks/schedule_sim.py: the event simulation of a local run's GPU jobs, on cases worked by
hand, and the script end to end on the paper rehearsal's per-cell table."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from schedule_sim import simulate  # noqa: E402

JOBS = {"a": 10.0, "b": 10.0, "c": 4.0, "d": 4.0, "e": 2.0}  # seconds, start-up included


def test_one_job_per_gpu_is_longest_first_list_scheduling():
    # GPU 0: a, c, e (16 s); GPU 1: b, d (14 s)
    assert simulate(JOBS, JOBS, 2, before_claim=dict.fromkeys(JOBS, 1.0)) == 16.0


def test_two_jobs_per_gpu_overlap_the_next_start_up():
    """Four jobs start at 0 and are ready at 1: a and b compute 1-10 (their 10 s less the 1 s of
    start-up); c and d 10-13; e starts in the slot a frees at 10, is ready at 11 and computes 13-14."""
    assert simulate(JOBS, JOBS, 2, per_gpu=2, before_claim=dict.fromkeys(JOBS, 1.0)) == 14.0


def test_waiting_jobs_claim_in_priority_order_or_first_ready():
    """One GPU, a long job (10 s, 3 s of start-up) and a short one (2 s, 1 s). By priority the GPU
    waits for the long one (3-10), then the short one runs (10-11); first ready, the short one runs
    1-2 and the long one 3-10."""
    jobs, before = {"long": 10.0, "short": 2.0}, {"long": 3.0, "short": 1.0}
    assert simulate(jobs, jobs, 1, per_gpu=2, before_claim=before, claims="priority") == 11.0
    assert simulate(jobs, jobs, 1, per_gpu=2, before_claim=before, claims="ready") == 10.0


def test_the_paper_rehearsal_scheduled_on_eight_gpus():
    rates = "gpt-neo-2.7b=112600,pythia-2.8b=103300,mamba-2.8b=86600,mamba2-2.7b=78500,mamba2-130m=500000"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "schedule_sim.py")]
    cmd += ["--cells-md", str(ROOT / "benchmarks" / "results" / "paper_rehearsal.md"), "--n-prompts", "160"]
    cmd += ["--n-token-prompts", "8", "--stream-s", "0.07", "--rates", rates, "--gpus", "8", "--trials", "20"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    rows, probes = {}, {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] == "8":
            key = (cells[1].split(":")[0].split(" ")[0], cells[2], cells[3])
            rows[key] = float(cells[4].split(" ")[0])
            probes[key] = None if cells[6] == "-" else float(cells[6].split(" ")[0])
    assert out.startswith("76 extraction jobs")
    assert "36 probe jobs of 17 s" in out.splitlines()[0]
    # the probes' claims (two jobs per GPU only) cost the run at most their GPU time spread over the 8
    for key, with_probes in probes.items():
        if key[1] == "1":
            assert with_probes is None
        else:
            assert rows[key] < with_probes <= rows[key] + 36 * 26 / 60 / 8 + 0.2
    optimum, workflow, old = rows[("optimum", "1", "-")], rows[("workflow", "1", "-")], rows[("old", "1", "-")]
    ahead, ready = rows[("workflow", "2", "priority")], rows[("workflow", "2", "ready")]
    # the workflow's priority is within 0.2 min of the optimum, the old one was not; start-up ahead
    # of the GPU saves more than a minute, and only with claims in priority order
    assert workflow - optimum <= 0.2 < old - optimum
    assert ahead < workflow - 1.0 and ahead < ready


def test_job_ends_are_recorded_in_both_modes():
    """``ends`` receives each job's end: one job per GPU as list scheduling places them; two per GPU
    as the events of test_two_jobs_per_gpu_overlap_the_next_start_up."""
    ends = {}
    assert simulate(JOBS, JOBS, 2, before_claim=dict.fromkeys(JOBS, 1.0), ends=ends) == 16.0
    assert ends == {"a": 10.0, "b": 10.0, "c": 14.0, "d": 14.0, "e": 16.0}
    ends = {}
    assert simulate(JOBS, JOBS, 2, per_gpu=2, before_claim=dict.fromkeys(JOBS, 1.0), ends=ends) == 14.0
    assert ends == {"a": 10.0, "b": 10.0, "c": 13.0, "d": 13.0, "e": 14.0}


def test_a_follower_claims_at_the_lowest_priority_after_its_job():
    """One GPU, two jobs started at 0 and ready at 1: a computes 1-10; its probe starts at 10 and is
    ready at 11, but b (ready since 1, an extraction) claims first and computes 10-13; the probe
    then computes 13-15. With one job per GPU, followers are refused."""
    jobs, before = {"a": 10.0, "b": 4.0}, {"a": 1.0, "b": 1.0}
    ends = {}
    wall = simulate(jobs, jobs, 1, per_gpu=2, before_claim=before, ends=ends, followers={"a": (3.0, 1.0)})
    assert wall == 15.0 and ends == {"a": 10.0, "b": 13.0, "a#follower": 15.0}
    with pytest.raises(ValueError, match="per_gpu >= 2"):
        simulate(jobs, jobs, 1, before_claim=before, followers={"a": (3.0, 1.0)})
