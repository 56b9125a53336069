"""The redis-py cluster internals `shared.redispy` reaches for (`send_together`,
`follow_moved`), and the cluster client's routing hook `shared.connections` overrides, are
still where they are reached for. No sockets: the installed redis-py is
inspected, and a failure names the internal that moved."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode, NodesManager, PipelineCommand

from shared.connections import stream_read_keys


def test_a_pipeline_command_is_made_from_its_position_and_arguments() -> None:
    command = PipelineCommand(0, "WAIT", 1, 250)
    assert command.args == ("WAIT", 1, 250), "redis-py changed PipelineCommand(position, *args)"
    assert command.result is None, "redis-py moved PipelineCommand.result"


def test_a_cluster_node_runs_a_batch_on_one_connection() -> None:
    execute = ClusterNode.execute_pipeline
    assert inspect.iscoroutinefunction(execute), "ClusterNode.execute_pipeline is not a coroutine"
    assert list(inspect.signature(execute).parameters) == ["self", "commands"], (
        "redis-py changed ClusterNode.execute_pipeline(commands)"
    )
    source = inspect.getsource(execute)
    # One connection for the whole batch, written in one go: what makes WAIT answer for it.
    assert source.count("acquire_connection()") == 1, (
        "execute_pipeline no longer uses one connection"
    )
    assert "pack_commands" in source, "execute_pipeline no longer writes the batch in one go"


def test_the_nodes_manager_patches_a_slot_from_a_moved_reply() -> None:
    move = NodesManager.move_slot
    assert inspect.iscoroutinefunction(move), "NodesManager.move_slot is not a coroutine"
    assert list(inspect.signature(move).parameters) == ["self", "e"], (
        "redis-py changed NodesManager.move_slot(e)"
    )


def test_the_cluster_client_routes_by_determine_slot() -> None:
    """`shared.connections`' cluster client overrides `_determine_slot` to read the keys of
    XREADGROUP / XREAD itself (redis-py asks the server: `COMMAND GETKEYS`)."""
    determine = RedisCluster._determine_slot
    assert inspect.iscoroutinefunction(determine), "RedisCluster._determine_slot is no coroutine"
    assert list(inspect.signature(determine).parameters) == ["self", "command", "args"], (
        "redis-py changed RedisCluster._determine_slot(command, *args)"
    )
    source = inspect.getsource(RedisCluster.execute_command)
    assert "_determine_slot(*args)" in source, "execute_command no longer routes by it"


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (("XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "BLOCK", "5", "STREAMS", "s", ">"),
         ("s",)),
        # A group named STREAMS: the option scan starts after the group and the consumer.
        ((b"XREADGROUP", b"GROUP", b"STREAMS", b"c", b"NOACK", b"STREAMS", b"a", b"b", b"0",
          b"0"), (b"a", b"b")),
        (("xread", "COUNT", "1", "STREAMS", "s", "0"), ("s",)),
        (("XREAD", "STREAMS", "s"), None),  # no id: malformed, the server says how
        (("XREAD", "COUNT", "1"), None),
        (("GET", "STREAMS", "s", "0"), None),  # not a stream read
    ],
)  # fmt: skip
def test_stream_read_keys_are_the_first_half_after_streams(
    args: tuple[Any, ...], keys: tuple[Any, ...] | None
) -> None:
    assert stream_read_keys(args[0], args[1:]) == keys
