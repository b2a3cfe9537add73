"""The pipelines core (issue 14): shared quota pools, capacity estimates, training runs and
datasets, judged like the models' monitors. Pure: no I/O, no clock (time is an argument);
every decision carries its reason and evidence; states are plain data (`to_dict`/`from_dict`).

- `quota`: a quota pool's state (keyed by the pool): configure, observe usage, check on a grid.
- `pipeline`: a pipeline's state (keyed by the pipeline): training runs, dataset profiles and
  its own usage while it trains.
- `capacity`: serving capacity from a predicted QPS, and whether a traffic step fits a pool.
- `policy`: the pipelines policy (controller/policies/pipelines.yaml).
"""

from controller.core.pipelines import capacity, pipeline, quota
from controller.core.pipelines.common import PipelinesOutput, PipelinesResult
from controller.core.pipelines.policy import PipelinesPolicy
from controller.core.pipelines.state import PipelineState, PoolState

__all__ = [
    "PipelineState",
    "PipelinesOutput",
    "PipelinesPolicy",
    "PipelinesResult",
    "PoolState",
    "capacity",
    "pipeline",
    "quota",
]
