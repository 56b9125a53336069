"""The redis-py cluster internals `shared.redispy` reaches for (`send_together`,
`follow_moved`) are still where it reaches for them. No sockets: the installed redis-py is
inspected, and a failure names the internal that moved."""

from __future__ import annotations

import inspect

from redis.asyncio.cluster import ClusterNode, NodesManager, PipelineCommand


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
