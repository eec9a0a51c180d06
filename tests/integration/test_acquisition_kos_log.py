"""The one INFO line an administrator finds a built acquisition KOS by (issue 13)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from node.app import Node
from node.mpps.acquisition import KOS_BUILT
from tests.helpers import STUDY_UID
from tests.integration.mpps_scu import final_attributes
from tests.integration.test_acquisition_kos import (
    acquisition,
    kos_path,
    send,
    start_procedure,
    wait_state,
)

pytestmark = pytest.mark.dcmtk


def test_kos_built_is_logged_once(
    node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.acquisition")
    series = acquisition()
    client, uid = start_procedure(node)
    send(node, tmp_path, [ds for group in series.values() for ds in group])
    assert client.set(uid, final_attributes(series)).Status == 0
    client.close()
    assert wait_state(node, uid, {KOS_BUILT, "failed"}) == KOS_BUILT
    count = sum(len(group) for group in series.values())
    expected = (
        f"acquisition KOS built: study {STUDY_UID}, MPPS {uid}, {count} instances, "
        f"{kos_path(node, uid)}"
    )
    lines = [r for r in caplog.records if r.name == "node.acquisition" and "KOS built" in r.message]
    assert [(r.levelno, r.getMessage()) for r in lines] == [(logging.INFO, expected)]
