"""The gate: fails a real slowdown or a changed counter, passes noise, names case, numbers and file."""
import numpy as np
import pytest

from workloads import gate as bl

from .test_baselines import make_result

PATH = "baselines/nvidia-h100-80gb-hbm3/paper.json"
CASE = "llama-7b/T-T/cuda_graph/paper/bs1"


def noisy(median, n=10, sigma=0.01, seed=0):
    return list(np.random.default_rng(seed).lognormal(np.log(median), sigma, n))


def entry(samples, speedup=(9.5, 9.3, 9.7), **counters):
    return bl.entry_from_result(make_result(CASE, samples=samples, speedup=speedup, **counters))


def test_a_a_pair_passes():
    base = entry(noisy(250.0, seed=1))
    again = make_result(CASE, samples=noisy(250.0, seed=2), speedup=(9.4, 9.2, 9.6))
    assert bl.check(again, base, path=PATH, timing=True) == []


def test_a_ten_percent_slowdown_fails_with_the_numbers():
    base = entry(noisy(250.0, seed=1))
    slower = make_result(CASE, samples=noisy(275.0, seed=2), speedup=(9.4, 9.2, 9.6))
    (msg,) = bl.check(slower, base, path=PATH, timing=True)
    assert CASE in msg and PATH in msg and "+10" in msg and "250" in msg


def test_noise_wider_than_the_change_does_not_fail():
    """A 6% shift inside 20% round-to-round noise is not a confident regression."""
    base = entry(noisy(250.0, n=5, sigma=0.2, seed=1))
    shifted = make_result(CASE, samples=noisy(265.0, n=5, sigma=0.2, seed=2), speedup=(9.4, 9.2, 9.6))
    assert bl.check(shifted, base, path=PATH, timing=True) == []


def test_speedup_below_the_stored_minimum_fails():
    base = entry(noisy(250.0, seed=1))   # min_speedup = floor(9.3 * 0.75) = 6.97
    assert base["min_speedup"] == pytest.approx(6.97)
    worse = make_result(CASE, samples=noisy(250.0, seed=2), speedup=(6.5, 6.3, 6.7))
    (msg,) = bl.check(worse, base, path=PATH, timing=True)
    assert "speedup over eager 6.50x" in msg and "6.97x" in msg and PATH in msg


def test_counters_gate_everywhere_timings_only_on_their_device_class():
    base = entry(noisy(250.0, seed=1), graphs=1, graph_breaks=0, recompiles=0)
    slower_and_broken = make_result(CASE, samples=noisy(300.0, seed=2), speedup=(1.0, 0.9, 1.1),
                                    graphs=2, graph_breaks=1, recompiles=0)
    cpu = bl.check(slower_and_broken, base, path=PATH, timing=False)
    assert sorted(m.split(": ")[1] for m in cpu) == ["counter graph_breaks changed", "counter graphs changed"]
    assert any("measured 1, baseline 0" in m for m in cpu)
    assert len(bl.check(slower_and_broken, base, path=PATH, timing=True)) == 4


def test_counters_missing_from_a_run_are_not_compared():
    base = entry(noisy(250.0, seed=1), graphs=1, kernels_per_step=293)
    cpu_run = make_result(CASE, samples=noisy(250.0, seed=2), graphs=1)   # no kernel counts on a CPU
    assert bl.check(cpu_run, base, path=PATH, timing=False) == []


def test_a_changed_kernel_count_names_the_kernels_that_moved():
    """Same code, other kernels: on an H200 one Seamless step counted 591 to 735 kernels in
    different processes; the message says which kernels to look at."""
    names = {"nvjet_gemm": 96.0, "triton_poi_fused_add_0": 48.0, "gemvx": 24.0}
    base = entry(noisy(250.0, seed=1), graphs=2, kernels_per_step=168.0)
    base["kernel_names"] = names
    run = make_result(CASE, samples=noisy(250.0, seed=2), graphs=2, kernels_per_step=240.0)
    run["kernel_names"] = names | {"gemvx": 72.0, "memcpy32_post": 24.0}
    (msg,) = bl.check(run, base, path=PATH, timing=False)
    assert msg.endswith("counter kernels_per_step changed: measured 240.0, baseline 168.0 "
                        f"({PATH}); by kernel: +48 gemvx, +24 memcpy32_post")
    run["counters"]["kernels_per_step"] = 168.0
    assert bl.check(run, base, path=PATH, timing=False) == []   # names alone are not gated
    del base["kernel_names"]
    run["counters"]["kernels_per_step"] = 240.0
    (msg,) = bl.check(run, base, path=PATH, timing=False)
    assert msg.endswith(f"baseline 168.0 ({PATH})")


def test_cublas_auxiliary_kernels_are_reported_but_not_gated():
    """cuBLAS picks its GEMV and split-K variants at run time: the same compiled step ran 24 or 72
    auxiliary kernels a step in two processes, its total the same. The total stays gated."""
    base = entry(noisy(250.0, seed=1), graphs=2, kernels_per_step=591.0, blas_helpers_per_step=72.0)
    run = make_result(CASE, samples=noisy(250.0, seed=2), graphs=2, kernels_per_step=591.0,
                      blas_helpers_per_step=24.0)
    assert bl.check(run, base, path=PATH, timing=False) == []
    run["counters"]["kernels_per_step"] = 663.0
    (msg,) = bl.check(run, base, path=PATH, timing=False)
    assert "counter kernels_per_step changed: measured 663.0, baseline 591.0" in msg


def test_a_changed_kernel_count_says_when_the_compile_timed_its_choices():
    base = entry(noisy(250.0, seed=1), graphs=1, kernels_per_step=591.0)
    run = make_result(CASE, samples=noisy(250.0, seed=2), graphs=1, kernels_per_step=663.0)
    run["compiler"] = {"inductor.pad_mm_bench": 7, "inductor.fxgraph_cache_miss": 1}
    (msg,) = bl.check(run, base, path=PATH, timing=False)
    assert msg.endswith("; this compile timed 7 GEMM padding choices (inductor's pad_mm), whose answers can "
                        "differ between processes of the same code (inductor option shape_padding=False removes them)")
    run["compiler"] = {"inductor.fxgraph_cache_hit": 1}   # nothing timed: nothing to say
    (msg,) = bl.check(run, base, path=PATH, timing=False)
    assert msg.endswith(f"baseline 591.0 ({PATH})")


def test_kernel_name_changes_lists_the_largest_moves_first():
    now = {f"k{i}": float(i) for i in range(10)}
    assert bl.kernel_name_changes(now, {"k0": 0.0}, top=3) == "; by kernel: +9 k9, +8 k8, +7 k7 and 6 more"
    assert bl.kernel_name_changes(now, {}) == ""   # an entry measured before names were kept
    assert bl.kernel_name_changes(now, dict(now)) == ""


def test_declared_requirements():
    req = [dict(case=CASE, device_class="nvidia-h100", max_tpot_ms=5.6, min_roofline=0.8, min_speedup=4.0, why="target")]
    r = make_result(CASE, speedup=(3.5, 3.4, 3.6))
    r["device_class"] = "nvidia-h100-80gb-hbm3"
    r["tpot_ms"]["median"] = 6.0
    r["roofline"] = {"fraction": 0.75}
    msgs = bl.check_requirements(r, req)
    assert len(msgs) == 3 and all(CASE in m and "target" in m for m in msgs)
    r["device_class"] = "nvidia-h200"
    assert bl.check_requirements(r, req) == []


def test_a_failure_says_when_other_processes_kept_the_host_busy():
    """Another job on the host slows host-bound cases beyond what the launch probe sees; the
    message says how many cores other processes kept busy during the rounds, beside the
    baseline's figure, and says nothing where the host was quiet."""
    base = bl.entry_from_result(make_result(CASE, samples=noisy(250.0, seed=1)) | {"host": {"other_cores": 0.1}})
    busy = make_result(CASE, samples=noisy(400.0, seed=2)) | {"host": {"other_cores": 3.2}}
    (msg,) = bl.check(busy, base, path=PATH, timing=True)
    assert "other processes kept 3.2 of this host's cores busy during its rounds (the baseline's: 0.1)" in msg
    quiet = make_result(CASE, samples=noisy(400.0, seed=2)) | {"host": {"other_cores": 0.2}}
    (msg,) = bl.check(quiet, base, path=PATH, timing=True)
    assert "other processes" not in msg


def judged(run, base):
    """A check's failures and tracked lines together: the notes about the host go with both."""
    tracked = []
    return bl.check(run, base, path=PATH, timing=True, tracked=tracked) + tracked


def test_a_host_bound_failure_says_when_its_thread_was_held_off_the_cpu():
    """A host-bound case runs at the pace its timing thread gets the CPU: the message says the
    share of its rounds' wall time the thread was on a CPU (beside the baseline's) where that
    fell below 90%, and how long the CPU quota throttled the process; a GPU-bound case, whose
    thread waits on the GPU, gets no such note."""
    base = bl.entry_from_result(make_result(CASE, samples=noisy(250.0, seed=1))
                                | {"host": {"share": 0.8, "on_cpu": 0.99, "throttled_ms": 0.0}})
    held = make_result(CASE, samples=noisy(400.0, seed=2)) | {"host": {"share": 0.8, "on_cpu": 0.55, "throttled_ms": 812.0}}
    (msg,) = judged(held, base)
    assert "its timing thread was on a CPU for 55% of its rounds' wall time (the baseline's: 99%)" in msg
    assert "held it off the CPU for 812 ms" in msg
    ran = make_result(CASE, samples=noisy(400.0, seed=2)) | {"host": {"share": 0.8, "on_cpu": 0.97, "throttled_ms": 0.0}}
    gpu_bound = make_result(CASE, samples=noisy(400.0, seed=2)) | {"host": {"share": 0.05, "on_cpu": 0.4}}
    for r in (ran, gpu_bound):
        (msg,) = judged(r, base)
        assert "timing thread" not in msg and "quota" not in msg


def test_a_host_bound_failure_says_when_the_hosts_speed_moved_during_its_rounds():
    """Each timed round is preceded by a host probe; where those probes differ by a fifth or more
    in a host-bound case, the failure says so with their range (the host's speed moved inside
    the run, which a single figure for the run hides); steady probes or a GPU-bound case get no
    such note."""
    base = bl.entry_from_result(make_result(CASE, samples=noisy(250.0, seed=1)) | {"host": {"share": 0.6, "launch_us": 9.0}})
    moved = make_result(CASE, samples=noisy(400.0, seed=2)) | {
        "host": {"share": 0.6, "launch_us": 9.4, "launch_us_rounds": [9.2, 13.0, 9.4]}}
    (msg,) = judged(moved, base)
    assert "the host's speed moved during its rounds (probed before each: 9.2 to 13.0 us per op" in msg
    # With one probe per round, the note pairs the slowest and the fastest round with theirs.
    paired = make_result(CASE, samples=[410.0, 520.0, 395.0]) | {
        "host": {"share": 0.6, "launch_us": 9.4, "launch_us_rounds": [9.2, 13.0, 9.4]}}
    (msg,) = judged(paired, base)
    assert ("9.2 to 13.0 us per op; its slowest round, 520.00 ms, came after a probe of 13.0, "
            "its fastest, 395.00 ms, after 9.4)") in msg
    steady = make_result(CASE, samples=noisy(400.0, seed=2)) | {
        "host": {"share": 0.6, "launch_us": 9.2, "launch_us_rounds": [9.0, 9.2, 9.9]}}
    gpu_bound = make_result(CASE, samples=noisy(400.0, seed=2)) | {
        "host": {"share": 0.05, "launch_us": 9.4, "launch_us_rounds": [9.2, 13.0, 9.4]}}
    for r in (steady, gpu_bound):
        (msg,) = judged(r, base)
        assert "speed moved" not in msg


def test_a_latency_failure_names_the_garbage_collector_and_another_cpu_model():
    """Python's garbage collector stalls a host-bound round for as long as it collects, and a
    host-bound rung runs at the pace of the host's CPU: a latency failure says how long the
    collector took of the median round (with the baseline's) where that is 2% of the round or
    more, and names both CPU models where the run's differs from the baseline's."""
    def with_cpu(r, cpu):
        return r | {"provenance": r["provenance"] | {"cpu": cpu}}

    base = bl.entry_from_result(with_cpu(make_result(CASE, samples=noisy(250.0, seed=1))
                                         | {"host": {"share": 0.8, "gc_ms": 1.0, "gc_full": 0}}, "CPU A"))
    slow = with_cpu(make_result(CASE, samples=noisy(400.0, seed=2))
                    | {"host": {"share": 0.8, "gc_ms": 60.0, "gc_full": 2}}, "CPU B")
    (msg,) = judged(slow, base)
    assert "Python's garbage collector took 60.0 ms of its median round (15%, 2 full collections) (the baseline's: 1.0 ms)" in msg
    assert "this host's CPU is 'CPU B', the baseline's 'CPU A'" in msg
    assert "own other threads" not in msg
    busy = make_result(CASE, samples=noisy(400.0, seed=2)) | {"host": {"share": 0.8, "own_threads": 1.3}}
    (msg,) = judged(busy, base)
    assert "the suite's own other threads kept 1.3 cores busy during its rounds" in msg
    same = with_cpu(make_result(CASE, samples=noisy(400.0, seed=2)) | {"host": {"share": 0.8, "gc_ms": 2.0}}, "CPU A")
    (msg,) = judged(same, base)
    assert "garbage collector" not in msg and "CPU is" not in msg


def test_host_share_is_the_gpus_idle_fraction():
    from workloads.measure.counters import host_share

    assert host_share(2.0, 10.0) == pytest.approx(0.8)
    assert host_share(12.0, 10.0) == 0.0      # kernels overlapping the clock: no idle time
    assert host_share(0.0, 10.0) == 1.0


def test_a_faster_host_explains_a_lower_speedup_only_by_the_references_host_bound_share():
    """Measured on two H200 hosts (docs/measured.md, HSTU): the eager reference at batch 32 and 1K, half
    host-bound, took 224 ms where the host launched at 15.0 us per op and 121 ms at 8.2, while
    the compiled rung held at about 10.5 ms, so the speedup fell from over 17x to 11.8x."""
    def host(launch_us, share, ref):
        return {"launch_us": launch_us, "share": share, "reference_share": ref}

    base = bl.entry_from_result(make_result(CASE, samples=noisy(10.8, seed=1), speedup=(20.8, 17.9, 23.0))
                                | {"host": {"launch_us": 15.0, "share": 0.13}})
    assert base["min_speedup"] == pytest.approx(13.42)
    faster = make_result(CASE, samples=noisy(10.3, seed=2), speedup=(11.8, 11.5, 11.9)) | {"host": host(8.2, 0.10, 0.50)}
    assert bl.check(faster, base, path=PATH, timing=True) == []

    (msg,) = bl.check(faster | {"host": host(15.0, 0.10, 0.50)}, base, path=PATH, timing=True)   # same host
    assert "below the minimum 13.42x: 13.42x stored" in msg and "host" not in msg
    # An eager reference no more host-bound than the lever gains nothing from a faster host.
    (msg,) = bl.check(faster | {"host": host(8.2, 0.10, 0.05)}, base, path=PATH, timing=True)
    assert "below the minimum 13.42x" in msg and "host" not in msg
    # One a little more host-bound lowers the floor by what it explains, and the message says so.
    (msg,) = bl.check(faster | {"host": host(8.2, 0.0, 0.20)}, base, path=PATH, timing=True)
    assert ("below the minimum 12.20x: 13.42x stored in baselines/nvidia-h100-80gb-hbm3/paper.json, times 0.91 "
            "as this host launches 45% faster than the baseline's (8.2 vs 15.0 us per op) with the eager "
            "reference 20% and the lever 0% host-bound") in msg


def test_a_slower_host_lowers_the_floor_by_the_levers_own_host_bound_share():
    base = bl.entry_from_result(make_result(CASE, samples=noisy(5.0, seed=1), speedup=(5.0, 4.8, 5.2))
                                | {"host": {"launch_us": 10.0, "share": 0.6}})
    # Host 50% slower, a lever 80% host-bound beside a 20% host-bound reference: the ratio can
    # fall to (1 + 0.2 * 0.5) / (1 + 0.8 * 0.5) = 0.79 of what it was.
    slower = make_result(CASE, samples=noisy(5.0, seed=2), speedup=(3.2, 3.0, 3.3)) | {
        "host": {"launch_us": 15.0, "share": 0.8, "reference_share": 0.2}}
    assert bl.speedup_allowance(slower["host"], base["host"])[0] == pytest.approx(1.1 / 1.4)
    assert [m for m in bl.check(slower, base, path=PATH, timing=True) if "speedup" in m] == []
    assert bl.speedup_allowance({"launch_us": 15.0, "share": 0.8}, base["host"]) == (1.0, "")   # no reference figure


def test_a_rung_timed_without_eager_is_not_judged_on_speedup_requirements():
    """--latency-only measures no speedup: a declared speedup bar is left unjudged rather than
    failed, while bars that need no eager (time per output token) still hold."""
    reqs = [dict(case=CASE, device_class="nvidia-h100", min_speedup=4.0, max_tpot_ms=0.5,
                 min_module_speedup={"decode": 4.0}, why="declared")]
    beside = make_result(CASE, samples=noisy(250.0, seed=1), speedup=(2.0, 1.9, 2.1)) | {
        "device_class": "nvidia-h100", "reference_latency_ms": {"median": 500.0, "ci": [490.0, 510.0]}}
    alone = make_result(CASE, samples=noisy(250.0, seed=1), speedup=None) | {
        "device_class": "nvidia-h100", "reference_latency_ms": None}
    assert len(bl.check_requirements(beside, reqs)) == 3          # speedup, module speedup, TPOT
    (only,) = bl.check_requirements(alone, reqs)
    assert "time per output token" in only



def _with_host(result, launch_us, share, run_share=None):
    return result | {"host": {"launch_us": launch_us, "share": share, "run_share": run_share}}


def test_a_host_bound_case_is_tracked_not_gated_and_its_gpu_time_gates():
    """Measured on H200 hosts: HSTU's batch-1 rungs moved 1.29-1.96x in wall time between hosts
    with no code changed while their GPU time held (0.97-1.01x). A case whose GPU idles for more
    than HOST_BOUND of its run has its wall latency tracked, with the figures, not failed; a
    5% slowdown of its kernels fails it wherever it runs."""
    base = bl.entry_from_result(_with_host(make_result(CASE, samples=noisy(2.0, seed=1)), 8.0, 0.6, 0.7)
                                | {"gpu_ms": {"run": 0.6}})
    other_host = _with_host(make_result(CASE, samples=noisy(3.9, seed=2)), 15.0, 0.8, 0.85) | {"gpu_ms": {"run": 0.598}}
    tracked = []
    assert bl.check(other_host, base, path=PATH, timing=True, tracked=tracked) == []
    (line,) = tracked
    assert "tracked, not gated: the GPU idles 85% of its run" in line and "+9" in line
    slower_kernels = other_host | {"gpu_ms": {"run": 0.63}}
    (msg,) = bl.check(slower_kernels, base, path=PATH, timing=True)
    assert msg == (f"{CASE}: GPU time of a run 0.630 ms vs baseline 0.600 ms: +5.0%, over the 3% threshold ({PATH})")
    assert bl.check(other_host | {"gpu_ms": {"run": 0.612}}, base, path=PATH, timing=True) == []   # +2%


def test_a_gpu_bound_case_gets_no_allowance_for_a_slower_host():
    """A graph replay (its GPU busy all but 2% of its run) that is 40% slower fails whatever the
    host's probe says: no threshold is widened to absorb a host."""
    base = bl.entry_from_result(_with_host(make_result(CASE, samples=noisy(100.0, seed=1)), 10.0, 0.02, 0.02))
    slower = _with_host(make_result(CASE, samples=noisy(140.0, seed=2)), 16.0, 0.02, 0.02)
    (msg,) = bl.check(slower, base, path=PATH, timing=True)
    assert "+40" in msg and "slower than the 5.0% threshold allows" in msg and "host launching" not in msg


def test_a_decode_steps_gpu_time_gates_beside_the_whole_runs():
    base = bl.entry_from_result(make_result(CASE, samples=noisy(100.0, seed=1))
                                | {"gpu_ms": {"run": 500.0, "per_step": 3.9, "once": 0.8}})
    step = make_result(CASE, samples=noisy(100.0, seed=2)) | {"gpu_ms": {"run": 505.0, "per_step": 4.1, "once": 0.8}}
    (msg,) = bl.check(step, base, path=PATH, timing=True)
    assert "GPU time a decode step 4.100 ms vs baseline 3.900 ms: +5.1%" in msg


def test_a_case_whose_host_share_was_never_measured_is_gated():
    base = entry(noisy(250.0, seed=1))
    assert "host" not in base
    slower = make_result(CASE, samples=noisy(275.0, seed=2), speedup=(9.4, 9.2, 9.6))
    assert len(bl.check(slower, base, path=PATH, timing=True)) == 1


def test_the_latency_threshold_is_never_widened_by_the_entrys_spread_or_modes():
    """A baseline whose rounds ran in two modes, or spread wide, gives a GPU-bound case no more
    room: a run in its slower mode fails."""
    two_modes = noisy(5.0, n=30, seed=1) + noisy(8.7, n=15, seed=2)
    base = entry(two_modes)
    (msg,) = bl.check(make_result(CASE, samples=noisy(8.4, seed=3), speedup=(9.4, 9.2, 9.6)), base, path=PATH, timing=True)
    assert "slower than the 5.0% threshold allows" in msg


def test_targets_are_per_device_class():
    h100 = [dict(case=CASE, device_class=bl.H100, min_speedup=4.0, why="h100 bar")]
    h200 = [dict(case=CASE, device_class=bl.H200, max_tpot_ms=4.04, why="h200 bar")]
    r = make_result(CASE, speedup=(3.5, 3.4, 3.6))
    r["tpot_ms"]["median"] = 4.4
    r["device_class"] = "nvidia-h100-80gb-hbm3"
    assert len(bl.check_requirements(r, h100)) == 1 and bl.check_requirements(r, h200) == []
    r["device_class"] = "nvidia-h200"
    assert bl.check_requirements(r, h100) == []
    (msg,) = bl.check_requirements(r, h200)
    assert "time per output token 4.40 ms exceeds 4.04 ms, 0.36 ms short (h200 bar)" in msg


def test_a_target_not_met_yet_is_reported_not_failed_until_its_entry_meets_it():
    """The Seamless vocoder's declared 10x failed every run, so every gate run was red and a new
    failure hid behind it. A target neither this run nor its entry meets is an open target with
    its gap; once an entry meets it, missing it fails."""
    req = [dict(case=CASE, device_class="nvidia-h200", min_speedup=10.0, why="bar")]
    run = make_result(CASE, speedup=(3.5, 3.4, 3.6)) | {"device_class": "nvidia-h200"}
    v = bl.verdict(run, None, req, path=PATH, timing=True)
    assert v.gate == "no baseline" and not v.failed
    (line,) = v.targets
    assert "speedup 3.50x is under 10.0x, 6.50x short (bar); a target not met yet" in line
    unmet = bl.entry_from_result(make_result(CASE, samples=noisy(250.0, seed=1), speedup=(3.6, 3.5, 3.7)))
    assert bl.judge_requirements(run, unmet, req) == ([], [line])
    met = bl.entry_from_result(make_result(CASE, samples=noisy(250.0, seed=1), speedup=(10.5, 10.2, 10.8)))
    failures, open_targets = bl.judge_requirements(run, met, req)
    assert open_targets == [] and failures[0].endswith("its baseline entry met this target, so it gates")
