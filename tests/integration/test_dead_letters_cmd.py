"""`rollout dead-letters` on the real broker: each letter with its reason, origin and first
bytes; a summary by topic and reason kind; a filter by source topic."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner, Result
from kafka import KafkaProducer

from controller.commands.deadletters_cmd import dead_letters_cmd
from controller.engine import dead_letter
from controller.settings import Settings
from controller.topics import topic_name
from schemas import FieldError, Rejection, Topic, decode

pytestmark = pytest.mark.kafka


@pytest.fixture
def settings(own_topics: Settings) -> Settings:
    return own_topics


def letters(settings: Settings) -> None:
    """Three dead letters: two undecodable predictions, one refused deployment request."""
    predictions = topic_name(settings, Topic.PREDICTIONS)
    deployments = topic_name(settings, Topic.DEPLOYMENTS)
    invalid = decode(b"{oops")
    assert isinstance(invalid, Rejection)
    records = [
        dead_letter(
            invalid, b"{oops", topic=predictions, partition=0, offset=7, key=b"m", now=time.time()
        ),
        dead_letter(
            invalid, b"x" * 300, topic=predictions, partition=1, offset=9, key=None, now=time.time()
        ),
        dead_letter(
            Rejection(
                reason="refused: the rollout of ranker-7 has ended",
                errors=(FieldError(loc="$", message="ended", kind="refused"),),
            ),
            b'{"type": "x"}',
            topic=deployments,
            partition=2,
            offset=3,
            key=b"ranker-7",
            now=time.time(),
        ),
    ]
    producer = KafkaProducer(**settings.kafka_client_options())
    for record in records:
        producer.send(
            topic_name(settings, Topic.DEAD_LETTER), key=record.key_bytes(), value=record.encode()
        )
    producer.flush()
    producer.close()


def run(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(
        dead_letters_cmd,
        [*args, "--bootstrap-servers", settings.bootstrap_servers],
        env={"ROLLOUT_TOPIC_PREFIX": settings.topic_prefix},
    )


def test_each_dead_letter_says_why_where_from_and_what(settings: Settings) -> None:
    letters(settings)

    result = run(settings)

    assert 0 == result.exit_code, result.output
    out = result.output
    assert 3 == out.count("dead  ")
    assert f"{topic_name(settings, Topic.PREDICTIONS)}[0]@7 key 'm'  not JSON" in out
    assert "'{oops'" in out
    assert "... (300 bytes)" in out
    assert "refused: the rollout of ranker-7 has ended" in out


def test_the_summary_counts_letters_by_topic_and_reason_kind(settings: Settings) -> None:
    letters(settings)

    result = run(settings, "--summary")

    assert 0 == result.exit_code, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["2", topic_name(settings, Topic.PREDICTIONS), "json_invalid"] in lines
    assert ["1", topic_name(settings, Topic.DEPLOYMENTS), "refused"] in lines


def test_letters_can_be_filtered_by_their_source_topic(settings: Settings) -> None:
    letters(settings)

    result = run(settings, "--topic", "deployments", "--json")

    assert 0 == result.exit_code, result.output
    assert 1 == len(result.output.splitlines())
    assert '"source_topic":"' + topic_name(settings, Topic.DEPLOYMENTS) in result.output
