"""A worker's invocation metrics added up in memory and written on flush."""

from __future__ import annotations

from prometheus_client import REGISTRY

from edgefn.edge import metrics


def _sample(name: str, **labels: str) -> float:
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return 0.0


def test_added_in_memory_until_flushed() -> None:
    m = metrics.InvocationMetrics("flushed", "tenant-f", "1.0.0")
    m._add(0.00004)  # the first bucket
    m._add(0.003)  # le=0.005
    m._add(20.0)  # only +Inf
    assert _sample("wasm_invoke_count_total", function_id="flushed") == 0
    m.flush()
    assert _sample("wasm_invoke_count_total", function_id="flushed") == 3
    bucket = "wasm_invoke_latency_seconds_bucket"
    assert _sample(bucket, function_id="flushed", le="0.0001") == 1
    assert _sample(bucket, function_id="flushed", le="0.0025") == 1
    assert _sample(bucket, function_id="flushed", le="0.005") == 2
    assert _sample(bucket, function_id="flushed", le="10.0") == 2
    assert _sample(bucket, function_id="flushed", le="+Inf") == 3
    assert abs(_sample("wasm_invoke_latency_seconds_sum", function_id="flushed")
               - 20.00304) < 1e-9
    m.flush()  # nothing new: nothing written
    assert _sample("wasm_invoke_count_total", function_id="flushed") == 3


def test_written_at_once_without_multiprocess_files() -> None:
    m = metrics.InvocationMetrics("direct", "tenant-d", "1.0.0")
    m.observe(0.001)
    assert _sample("wasm_invoke_count_total", function_id="direct") == 1
    assert _sample("wasm_invoke_latency_seconds_bucket", function_id="direct", le="0.001") == 1


def test_one_per_function_and_project_for_the_process() -> None:
    # A retired version's last counts are written: its metrics outlive it.
    first = metrics.invocation_metrics("kept", "tenant-k", "1.0.0")
    assert metrics.invocation_metrics("kept", "tenant-k", "1.0.0") is first
    assert metrics.invocation_metrics("kept", "tenant-other", "1.0.0") is not first
