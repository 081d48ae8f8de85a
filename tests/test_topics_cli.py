"""``nccoord topics create`` and what ``emit`` says when topics are missing."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from nccoord.cli import main
from nccoord.topics import TopicNames

pytestmark = pytest.mark.broker

BODY = '{"agentId": "a", "timestamp": "2026-12-04T00:00:00Z", "status": "healthy"}'


def test_emit_names_the_missing_topic_and_topics_create_makes_it(
    kafka_bootstrap: str, topic_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    emit = ["emit", "heartbeat", "--bootstrap", kafka_bootstrap, "--json", BODY]
    emit += ["--prefix", topic_prefix]
    assert main(emit) == 2
    err = capsys.readouterr().err.strip()
    assert f"topic {topic_prefix}system-heartbeat does not exist" in err
    assert "nccoord topics create" in err

    create = ["topics", "create", "--bootstrap", kafka_bootstrap]
    assert main([*create, "--prefix", topic_prefix]) == 0
    out = capsys.readouterr().out
    names = TopicNames(topic_prefix)
    assert out.splitlines() == [f"{name}: created" for name in names.all()]
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(
        timeout=10
    )
    assert set(names.all()) <= set(metadata.topics)

    assert main([*create, "--prefix", topic_prefix]) == 0
    assert "created" not in capsys.readouterr().out
    assert main(emit) == 0
    assert f"{topic_prefix}system-heartbeat key=a" in capsys.readouterr().out
