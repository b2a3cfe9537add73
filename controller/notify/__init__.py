"""The notifier's shell: reads the alerts topic, runs the pure core (controller.core.notify),
delivers to webhooks, Slack, PagerDuty and email with retries, and keeps its state in a
compacted topic. `rollout notify` (controller/commands/notify_cmd.py) drives it;
docs/notifications.md says what it promises."""
