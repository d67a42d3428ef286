"""Code Llama, text-to-text code completion (seed paper 1, Section IV-A)."""
from ..models import llama
from ..tasks import text
from .causal_lm import CausalLMWorkload

WORKLOAD = CausalLMWorkload(
    "llama", llama, tasks={"T-T": text.HUMANEVAL}, table_iii_batch=4,
    sources=("workloads/models/llama.py", "workloads/suites/llama.py", "perf_tests/test_llama.py"),
)
