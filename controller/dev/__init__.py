"""Developer tools, kept apart from what the worker imports in production.

- `controller.dev.kafka`: the local single-node Apache Kafka 4 broker (`rollout dev-kafka`).
- `controller.dev.demo`: the demo (`rollout demo`): a broker, a worker and a simulated fleet.
- `controller.dev.simulate`: scenarios, a simulated serving fleet, and the closed loop with a
  controller, a router and an approver (`rollout simulate`, the detection benchmark).
- `controller.dev.production`: a model's production traffic for its monitor, days of it
  (`rollout simulate --production`, the monitoring benchmark).

Nothing under `controller/stream`, `controller/core`, `controller/sdk` or `schemas` imports
this package (a test checks it).
"""
