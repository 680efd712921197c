"""Dynamic-batching settings of the CPU configs, read from the figures `python -m ensemble.tune` measured.

`max_queue_delay_microseconds` is added to a lone request's latency, and on a busy server requests batch up
while an instance is working anyway; so it is chosen from a sweep on the real server (ensemble/tune.py), not
guessed. The measured figures and the rule are kept in `ensemble/batching.json` and quoted in each config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from avpenet import contract
from avpenet.durable import replace_text

PLAN_FILE = Path(__file__).resolve().parent / "batching.json"
UNMEASURED_DELAY_US = 500


@dataclass
class BatchingPlan:
    delay_us_by_model: dict[str, int] = field(default_factory=dict)
    default_delay_us: int = UNMEASURED_DELAY_US
    preferred_batch_sizes: list[int] = field(
        default_factory=lambda: [contract.MAX_BATCH_SIZE // 2, contract.MAX_BATCH_SIZE]
    )
    # One ONNX Runtime thread per part: the local stack's parts share the host's cores with the Gateway and
    # each other, and a pool per part only competes for them (ensemble/README.md, *Threads per part*). 0 is
    # ORT's default, one thread per physical core (spinning is off in the backend).
    intra_op_threads: int = 1
    gpu_delay_us: int = 100  # starting point for GPUs; re-tune on the target with the same sweep
    measurement: dict = field(default_factory=dict)

    def delay_us(self, model: str) -> int:
        return int(self.delay_us_by_model.get(model, self.default_delay_us))

    def describe(self, model: str) -> list[str]:
        m = self.measurement
        if not m:
            return [
                f"max_queue_delay_microseconds: {self.delay_us(model)} "
                "(NOT measured yet: run python -m ensemble.tune)"
            ]
        lines = [
            f"max_queue_delay_microseconds: {self.delay_us(model)}, measured {m.get('date', '?')} on "
            f"{m.get('host', '?')} with `{m.get('command', 'python -m ensemble.tune')}`.",
            f"Rule: {m.get('rule', '')}",
        ]
        for row in m.get("sweep", []):
            lines.append(
                f"  delay {row['delay_us']:>5} us: lone request p50 {row['lone_p50_ms']:.2f} ms, "
                f"{row['concurrency']} concurrent: {row['throughput_rps']:.1f} req/s, "
                f"avg batch {row['avg_batch'].get(model, 0):.2f}"
            )
        return lines

    def describe_gpu(self) -> list[str]:
        return [
            f"max_queue_delay_microseconds: {self.gpu_delay_us} is a starting point for a GPU, where a batch",
            "costs about what one request costs (the four parts in PyTorch on an H200: 5-9 ms for one",
            "window, 7-12 ms for 64; docs/DEPLOY.md, GPU); re-run python -m ensemble.tune on the target",
            "host.",
        ]


def load_plan(path: Path = PLAN_FILE) -> BatchingPlan:
    if not path.exists():
        return BatchingPlan()
    data = json.loads(path.read_text())
    return BatchingPlan(
        delay_us_by_model={k: int(v) for k, v in data.get("delay_us_by_model", {}).items()},
        default_delay_us=int(data.get("default_delay_us", UNMEASURED_DELAY_US)),
        preferred_batch_sizes=[
            int(x) for x in data.get("preferred_batch_sizes", BatchingPlan().preferred_batch_sizes)
        ],
        intra_op_threads=int(data.get("intra_op_threads", BatchingPlan.intra_op_threads)),
        gpu_delay_us=int(data.get("gpu_delay_us", 100)),
        measurement=data.get("measurement", {}),
    )


def save_plan(plan: BatchingPlan, path: Path = PLAN_FILE) -> None:
    data = {
        "delay_us_by_model": plan.delay_us_by_model,
        "default_delay_us": plan.default_delay_us,
        "preferred_batch_sizes": plan.preferred_batch_sizes,
        "intra_op_threads": plan.intra_op_threads,
        "gpu_delay_us": plan.gpu_delay_us,
        "measurement": plan.measurement,
    }
    replace_text(path, json.dumps(data, indent=2) + "\n")  # every config is rendered from it: never half
