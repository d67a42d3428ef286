"""Code Llama, text-to-text code completion (seed paper 1, Section IV-A): the lever ladder."""

WORKLOAD = "llama"
LEVERS = ("eager", "sdpa", "compile", "cuda_graph")


def test_llama(case, run_case):
    run_case(case)
