"""The one log line an association gets says who ended it: "released", "aborted by the
node" (its timeout, its stop) or "aborted by the peer". On both association paths."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from node.app import Node
from node.config import NodeConfig
from tests.integration.refusals import EndedLines, ended_lines
from tests.integration.scu import association


@pytest.fixture
def ended() -> Iterator[EndedLines]:
    with ended_lines() as handler:
        yield handler


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pynetdicom-path"])
def test_the_log_line_says_who_ended_the_association(
    fast_path: bool,
    make_config: Callable[..., NodeConfig],
    start_node: Callable[..., Node],
    ended: EndedLines,
) -> None:
    node = start_node(make_config(node={"fast_path": fast_path, "network_timeout": 1}))
    with association(node.port, aet="POLITE") as assoc:
        assert assoc.send_c_echo().Status == 0
    assert " released after " in ended.next_line()

    with association(node.port, aet="RUDE") as assoc:
        assoc.abort()
    line = ended.next_line()
    assert " aborted by the peer after " in line, line

    with association(node.port, aet="SILENT") as assoc:
        line = ended.next_line()  # the node's network timeout (1 s) ends it
        assert "from SILENT@" in line
        assert " aborted by the node after " in line, line
        assoc.abort()
