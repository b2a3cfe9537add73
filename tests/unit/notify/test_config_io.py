"""A bad config file is one sentence a problem naming the file and the line; secrets come from
the environment variables the file names."""

from __future__ import annotations

import pytest

from controller.notify.config_io import NotifyConfigFileError, parse_config

GOOD = """\
default_receiver: hook
receivers:
  - name: hook
    webhook:
      url_env: HOOK_URL
"""


def test_a_secret_is_read_from_the_variable_the_file_names() -> None:
    config = parse_config(GOOD, "notify.yaml", {"HOOK_URL": "http://secret.invalid/x"})

    assert "http://secret.invalid/x" == config.receivers["hook"].options["url"]


def test_an_unset_variable_is_named_with_its_line() -> None:
    with pytest.raises(NotifyConfigFileError) as raised:
        parse_config(GOOD, "notify.yaml", {})

    assert str(raised.value).startswith(
        "notify.yaml, line 5: receivers[0].webhook.url_env: the environment variable HOOK_URL"
    )


def test_an_unknown_receiver_in_a_route_is_named_with_its_line() -> None:
    text = GOOD + "routes:\n  - match: {}\n    receiver: pager\n"

    with pytest.raises(NotifyConfigFileError) as raised:
        parse_config(text, "notify.yaml", {"HOOK_URL": "x"})

    assert "notify.yaml, line 8: routes[0].receiver: unknown receiver 'pager'; known: hook" == str(
        raised.value
    )


def test_broken_yaml_names_the_line() -> None:
    with pytest.raises(NotifyConfigFileError, match=r"notify.yaml, line 2: not valid YAML"):
        parse_config("receivers: [\n  - x: 1\n", "notify.yaml", {})
