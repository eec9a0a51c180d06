"""WADO-URI (PS3.18 9) at the node's own /wado: archived bytes, errors, custody, readiness."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from node.app import Node
from node.config import NodeConfig
from node.storage import audit
from node.storage.index import study_instances
from tests.conftest import config_dict
from tests.helpers import SERIES_UID, STUDY_UID, ct_dataset, run
from tests.integration.process import NodeProcess, write_config
from tests.integration.scu import association, store_status


@pytest.fixture
def node_with_ct(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> tuple[Node, str]:
    node = start_node(make_config())
    ds = ct_dataset()
    with association(node.port) as assoc:
        assert store_status(assoc, ds) == 0
    return node, str(ds.SOPInstanceUID)


def dicom_query(uid: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": STUDY_UID,
        "seriesUID": SERIES_UID,
        "objectUID": uid,
        "contentType": "application/dicom",
    }


def wado(node: Node, **params: str) -> httpx.Response:
    assert node.web is not None
    query = {"requestType": "WADO", "studyUID": STUDY_UID, "seriesUID": SERIES_UID, **params}
    return httpx.get(f"{node.web.url}/wado", params=query, timeout=10)


def test_application_dicom_is_the_archived_file_byte_for_byte(node_with_ct) -> None:  # type: ignore[no-untyped-def]
    node, uid = node_with_ct
    answer = wado(node, objectUID=uid, contentType="application/dicom")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/dicom"
    (row,) = study_instances(node.archive.engine, STUDY_UID)
    assert answer.content == node.archive.files.path(row.path).read_bytes()
    served = [r for r in audit.records(node.archive.engine) if r.event == "wado-retrieved"]
    assert [(r.sop_instance_uid, r.study_uid) for r in served] == [(uid, STUDY_UID)]
    assert served[0].details["client"].startswith("127.0.0.1:")
    assert audit.verify_chain(node.archive.engine).ok


def test_a_list_of_media_types_including_dicom_is_served(node_with_ct) -> None:  # type: ignore[no-untyped-def]
    node, uid = node_with_ct
    answer = wado(node, objectUID=uid, contentType="video/mpeg, application/dicom;q=0.5")
    assert answer.status_code == 200
    assert answer.content[128:132] == b"DICM"


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"requestType": "RETRIEVE"}, 400, "requestType"),
        ({"objectUID": "1.2.x"}, 400, "objectUID"),
        ({"studyUID": ""}, 400, "studyUID"),
        ({"objectUID": "1.2.3.4"}, 404, "no such object"),
        ({"seriesUID": "1.2.3.4"}, 404, "no such object"),  # the object, in another series
        ({"contentType": "video/mpeg"}, 406, "video/mpeg"),
        ({"contentType": "image/jp2"}, 406, "image/jp2"),
        ({"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2"}, 406, ""),
        ({"contentType": "application/dicom", "anonymize": "yes"}, 406, "anonymize"),
    ],
)
def test_bad_requests_get_their_http_status(node_with_ct, params, status, says) -> None:  # type: ignore[no-untyped-def]
    node, uid = node_with_ct
    answer = wado(node, **{"objectUID": uid, **params})
    assert answer.status_code == status, answer.text
    assert says in answer.text
    assert "wado-retrieved" not in [r.event for r in audit.records(node.archive.engine)]


def test_only_get_is_answered(node_with_ct) -> None:  # type: ignore[no-untyped-def]
    node, _uid = node_with_ct
    assert node.web is not None
    answer = httpx.post(f"{node.web.url}/wado", params={"requestType": "WADO"}, timeout=10)
    assert answer.status_code == 405


def test_serve_announces_the_http_url_and_serves_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node.yaml", config_dict(tmp_path))
    node = NodeProcess(config)
    try:
        url = node.wait_line(r"^ready http (http://127\.0\.0\.1:\d+)$")
        answer = httpx.get(f"{url}/wado", params={"requestType": "WADO"}, timeout=10)
        assert answer.status_code == 400
    finally:
        assert node.terminate() == 0


def test_a_non_loopback_host_without_users_is_a_configuration_error(tmp_path: Path) -> None:
    data = config_dict(tmp_path, http={"host": "0.0.0.0", "port": 0})
    done = run(sys.executable, "-m", "node", "serve", "-c", write_config(tmp_path / "n.yaml", data))
    assert done.returncode == 2
    assert "http.host: must be a loopback address" in done.stderr
    assert not (tmp_path / "node.sqlite").exists()


def test_an_http_port_in_use_stops_serve_before_it_writes(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = config_dict(tmp_path, http={"port": port})
        done = run(
            sys.executable, "-m", "node", "serve", "-c", write_config(tmp_path / "n.yaml", data)
        )
    assert done.returncode == 2
    assert f"http.port: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert not (tmp_path / "node.sqlite").exists()


def test_http_can_be_switched_off(
    make_config: Callable[..., NodeConfig], start_node: Callable[..., Node]
) -> None:
    node = start_node(make_config(http={"enabled": False}))
    assert node.web is None
    uid = generate_uid()
    assert uid  # the DICOM side runs as before
    with association(node.port) as assoc:
        assert assoc.send_c_echo().Status == 0


def test_the_links_the_reports_write_are_answered(node_with_ct) -> None:  # type: ignore[no-untyped-def]
    """The CDA's link to each referenced object (PS3.17 Table X.3-1) reaches the object."""
    from node.documents.wado_links import wado_url

    node, uid = node_with_ct
    assert node.web is not None
    link = wado_url(
        f"{node.web.url}/wado", STUDY_UID, SERIES_UID, uid, ("contentType", "application/DICOM")
    )
    answer = httpx.get(link, timeout=10)
    assert answer.status_code == 200
    (row,) = study_instances(node.archive.engine, STUDY_UID)
    assert answer.content == node.archive.files.path(row.path).read_bytes()


@pytest.mark.parametrize(
    ("http", "reporting", "expected"),
    [
        ({"port": 8123}, {}, "http://127.0.0.1:8123/wado"),
        ({"port": 8123, "host": "::1"}, {}, "http://[::1]:8123/wado"),
        ({"port": 0}, {}, None),  # known only once serving: name it in reporting
        ({"port": 8123, "enabled": False}, {}, None),
        (
            {"port": 8123},
            {"wado_base_url": "https://pacs.example/wado"},
            "https://pacs.example/wado",
        ),
    ],
)
def test_reports_link_to_the_node_itself_unless_told_otherwise(
    tmp_path: Path, http: dict[str, object], reporting: dict[str, object], expected: str | None
) -> None:
    from node.config import parse_config

    config = parse_config(config_dict(tmp_path, http=http, reporting=reporting), tmp_path)
    assert config.wado_base_url == expected


def test_custody_names_the_peer_not_what_a_header_claims(node_with_ct) -> None:  # type: ignore[no-untyped-def]
    node, uid = node_with_ct
    assert node.web is not None
    query = dicom_query(uid)
    headers = {"X-Forwarded-For": "203.0.113.7"}
    assert httpx.get(f"{node.web.url}/wado", params=query, headers=headers).status_code == 200
    (served,) = [r for r in audit.records(node.archive.engine) if r.event == "wado-retrieved"]
    assert served.details["client"].startswith("127.0.0.1:")


def test_head_sends_no_data_and_records_nothing(node_with_ct) -> None:  # type: ignore[no-untyped-def]
    node, uid = node_with_ct
    assert node.web is not None
    query = dicom_query(uid)
    answer = httpx.head(f"{node.web.url}/wado", params=query)
    assert answer.status_code == 200 and answer.content == b""
    assert "wado-retrieved" not in [r.event for r in audit.records(node.archive.engine)]


@pytest.mark.parametrize(
    ("host", "accepted"),
    [("localhost", True), ("::1", True), ("127.0.0.2", True), ("no-such-host.invalid", False)],
)
def test_names_are_loopback_only_when_every_address_is(
    tmp_path: Path, host: str, accepted: bool
) -> None:
    from node.config import parse_config
    from node.errors import ConfigError

    data = config_dict(tmp_path, http={"host": host, "port": 0})
    if accepted:
        assert parse_config(data, tmp_path).http.host == host
    else:
        with pytest.raises(ConfigError, match=r"http\.host: must be a loopback address"):
            parse_config(data, tmp_path)
