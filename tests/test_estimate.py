"""The estimate of a selection's time from stored baselines (`--estimate`)."""
import pytest

from workloads.case import Case
from workloads.run.estimate import estimate, render


def entry(ms, rounds, **kw):
    # Chameleon decodes: its kernels are counted over a few steps, not a whole run more.
    return {"latency_ms": {"median": ms, "samples": [ms] * rounds}, "runs": [{"rounds": rounds}],
            "tpot_ms": {"median": 5.0}} | kw


def case(task, lever, batch=1):
    return Case("chameleon", "chameleon-7b", task, lever, "paper", batch)


def test_an_input_costs_its_rounds_its_untimed_seconds_and_each_shared_setup_once():
    entries = {
        case("I-T", "eager").id: entry(2000.0, 5, untimed_s=3.0, build_s=20.0),
        case("I-T", "cuda_graph").id: entry(200.0, 5, untimed_s=1.5, compile_s=100.0, capture_s=0.5, build_s=20.0,
                                            speedup={"median": 10.0}),
        # IT-T reuses I-T's compiled decoders (one cache group) and its model.
        case("IT-T", "cuda_graph").id: entry(100.0, 15, untimed_s=0.5, compile_s=100.0, capture_s=0.5,
                                             speedup={"median": 6.0}),
    }
    cases = [case("I-T", "eager"), case("I-T", "cuda_graph"), case("IT-T", "eager"), case("IT-T", "cuda_graph")]
    it, itt = estimate(cases, entries)
    assert it["timed_s"] == pytest.approx(2.0 * 5 + 0.2 * 5)
    assert it["untimed_s"] == pytest.approx(3.0 + 1.5)
    assert it["setup_s"] == pytest.approx(20.0 + 100.0 + 0.5)          # build, compile, capture
    # IT-T's eager case has no entry: its rounds come from the rung's speedup, its untimed
    # seconds from its round (a warm-up and a breakdown round), and it is named as missing.
    assert itt["missing"] == [case("IT-T", "eager").id]
    assert itt["timed_s"] == pytest.approx(0.6 * 15 + 0.1 * 15)
    assert itt["untimed_s"] == pytest.approx(0.6 * 2 + 0.5) and itt["modelled"]
    assert itt["setup_s"] == 0.0
    text = render([it, itt], "nvidia-h200")
    total = sum(r["timed_s"] + r["untimed_s"] + r["setup_s"] for r in (it, itt))
    assert f"about {total / 60:.1f} min on nvidia-h200" in text
    assert "1 selected cases have no baseline there" in text and "1 inputs have entries older" in text


def test_latency_only_counts_no_eager_rounds_where_the_eager_case_is_not_selected():
    entries = {
        case("T-I", "eager").id: entry(32000.0, 3, untimed_s=60.0),
        case("T-I", "cuda_graph").id: entry(5800.0, 3, untimed_s=12.0, compile_s=16.0, speedup={"median": 5.5}),
    }
    (alone,) = estimate([case("T-I", "cuda_graph")], entries, latency_only=True)
    assert alone["timed_s"] == pytest.approx(5.8 * 3) and alone["untimed_s"] == pytest.approx(12.0)
    # Beside eager (not selected: its round is the rung's times its speedup, a long warm-up its breakdown).
    (beside,) = estimate([case("T-I", "cuda_graph")], entries)
    assert beside["timed_s"] == pytest.approx(31.9 * 3 + 5.8 * 3) and beside["untimed_s"] == pytest.approx(31.9 + 12.0)
    (selected,) = estimate([case("T-I", "eager"), case("T-I", "cuda_graph")], entries, latency_only=True)
    assert selected["timed_s"] == pytest.approx(32.0 * 3 + 5.8 * 3)   # eager selected: it runs as usual


def test_a_long_round_that_compiles_nothing_is_not_run_again_for_its_breakdown():
    long = entry(30000.0, 3)     # an entry from before untimed seconds were recorded
    (row,) = estimate([case("T-I", "eager")], {case("T-I", "eager").id: long})
    assert row["untimed_s"] == pytest.approx(30.0)   # the warm-up stands for the breakdown round
    (row,) = estimate([case("T-I", "eager")], {case("T-I", "eager").id: entry(3000.0, 3)})
    assert row["untimed_s"] == pytest.approx(6.0)    # a short one runs a breakdown round more


def test_an_input_with_no_entry_counts_nothing_and_says_so():
    (row,) = estimate([case("T-I", "eager"), case("T-I", "cuda_graph")], {})
    assert row["timed_s"] == row["untimed_s"] == row["setup_s"] == 0.0 and len(row["missing"]) == 2


def test_a_workload_that_decodes_nothing_counts_its_kernels_over_a_whole_run_more():
    hstu = Case("hstu", "hstu-paper", "H-A", "eager", "paper", 32)
    (row,) = estimate([hstu], {hstu.id: {"latency_ms": {"median": 300.0, "samples": [300.0] * 15},
                                         "runs": [{"rounds": 15}]}})
    assert row["untimed_s"] == pytest.approx(0.3 * 3)   # warm-up, breakdown, kernel count


def test_fixed_rounds_replace_each_entrys_own_round_count():
    entries = {case("I-T", "eager").id: entry(2000.0, 5, untimed_s=3.0),
               case("I-T", "cuda_graph").id: entry(200.0, 15, untimed_s=1.5, speedup={"median": 10.0})}
    cases = [case("I-T", "eager"), case("I-T", "cuda_graph")]
    (own,) = estimate(cases, entries)
    (three,) = estimate(cases, entries, rounds=3)
    assert own["timed_s"] == pytest.approx(2.0 * 15 + 0.2 * 15)   # eager runs while any rung does
    assert three["timed_s"] == pytest.approx(2.0 * 3 + 0.2 * 3) and three["untimed_s"] == own["untimed_s"]
