"""Subcommands of `rollout`; each module exposes click commands and is listed here."""

from __future__ import annotations

import importlib

import click

# module name -> names of the click commands or groups it exposes
_COMMANDS: dict[str, tuple[str, ...]] = {
    "controller.commands.devkafka": ("dev_kafka",),
    "controller.commands.schemas_cmd": ("schemas_group",),
    "controller.commands.topics_cmd": ("topics_group",),
    "controller.commands.acls_cmd": ("acls_cmd",),
    "controller.commands.keys_cmd": ("keys_group",),
    "controller.commands.replay_cmd": ("replay_cmd", "simulate_cmd"),
    "controller.commands.export_cmd": ("export_cmd",),
    "controller.commands.worker_cmd": ("worker_cmd",),
    "controller.commands.demo_cmd": ("demo_cmd",),
    "controller.commands.monitor_cmd": ("monitor_group",),
    "controller.commands.pool_cmd": ("pool_group",),
    "controller.commands.capacity_cmd": ("capacity_group",),
    "controller.commands.notify_cmd": ("notify_group",),
    "controller.commands.deadletters_cmd": ("dead_letters_cmd",),
    "controller.commands.ops": (
        "emit_cmd",
        "deploy_cmd",
        "approve_cmd",
        "deny_cmd",
        "pause_cmd",
        "resume_cmd",
        "abort_cmd",
        "rollback_cmd",
        "status_cmd",
        "watch_cmd",
        "alerts_cmd",
    ),
}


def register_all(group: click.Group) -> None:
    for module_name, names in _COMMANDS.items():
        module = importlib.import_module(module_name)
        for name in names:
            group.add_command(getattr(module, name))
