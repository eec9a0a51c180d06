"""Composition root: the only place that sets library globals and wires the node.

``build_node(config)`` returns a :class:`Node` whose ``start()`` listens (on port 0 the
OS picks one; ``node.port`` tells which) and whose ``stop()`` drains gracefully.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt

from node.access import AccessPolicy
from node.config import NodeConfig
from node.documents.acquisition_kos import AcquisitionKosBuilder
from node.documents.publish import DocumentPublisher
from node.errors import ConfigError
from node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from node.jobs.scheduler import Jobs
from node.mpps.acquisition import AcquisitionTracker
from node.mpps.registry import MppsRegistry
from node.mpps.workflow import AcquisitionWorkflow
from node.net.tls import server_context
from node.pynetdicom_compat import configure as configure_pynetdicom
from node.pynetdicom_compat import serve_in_background
from node.schema import open_database
from node.scu.associate import set_nodelay
from node.services.associations import AssociationRegistry
from node.services.contexts import (
    mpps_context,
    query_retrieve_contexts,
    storage_contexts,
    verification_context,
)
from node.services.echo import handle_echo
from node.services.fastpath import FastStoragePath
from node.services.gate import ConnectionGate
from node.services.inflight import InFlight
from node.services.mpps import MppsService
from node.services.pynetdicom_guard import guard_handlers, one_line_pynetdicom_errors
from node.services.qr import QueryRetrieveService
from node.services.server import NodeServer
from node.services.store import StoreService
from node.services.sub_operations import prefer_requestor_syntaxes
from node.signed_manifests.receiver import SignedManifestReceiver
from node.storage.archive import Archive
from node.storage.files import FileStore
from node.storage.recovery import recover
from node.transfer.queue import TransferQueue
from node.transfer.sender import TransferSender
from node.transfer.service import TransferService
from node.web.service import HttpService

log = logging.getLogger("node")


class _CurrentStderr(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time of each record (not at start)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


# First-generation threshold of the cyclic garbage collector (CPython's default is 700).
GC_FIRST_GENERATION_THRESHOLD = 50_000


def configure_library_globals() -> None:
    """Library globals and the garbage-collector policy: the composition root's alone,
    idempotent; every command with a configuration gets them (``cli.common.load``)."""
    # Building a 1000-reference document allocates tens of thousands of container objects
    # that all stay alive until it is stored; at the default threshold the collector ran
    # some eighty passes over them, one over the whole heap, for a third of the build time
    # and nothing to free. Rarer first-generation passes keep that cost away from every
    # burst (documents, C-FIND results, C-STORE bursts); reference counting frees the rest.
    gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
    # pynetdicom logs whole identifiers (patient names) at INFO by default. Outbound
    # C-STORE of a Path sends the stored bytes from the file (node.scu.store).
    configure_pynetdicom(log_identifiers=False, handler_level="none")


def configure_libraries(config: NodeConfig) -> None:
    """:func:`configure_library_globals` and the node's log lines on stderr, for the
    commands that run the node's services (``serve``, ``send``) and the tests' nodes.

    One-shot commands keep to their own one-line messages: pynetdicom's log lines about
    the same event would only repeat them.
    """
    configure_library_globals()
    root = logging.getLogger()
    if not any(getattr(h, "_dicom_node", False) for h in root.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._dicom_node = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.getLogger("node").setLevel(config.logging.level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    one_line_pynetdicom_errors()  # peer errors: one line each, no traceback


@dataclass(kw_only=True)
class Node:
    config: NodeConfig
    archive: Archive
    registry: AssociationRegistry
    store: StoreService
    inflight: InFlight
    mpps: MppsService
    workflow: AcquisitionWorkflow
    jobs: Jobs
    transfers: TransferService
    manifests: SignedManifestReceiver
    ae: AE
    qr: QueryRetrieveService
    fast_path: FastStoragePath | None = None
    gate: ConnectionGate | None = None
    server: NodeServer | None = None
    web: HttpService | None = None  # the HTTP service (http.enabled)
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        assert self.server is not None, "the node has not started"
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Listen for associations (non-blocking)."""
        cfg = self.config.node
        handlers = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            *self.registry.handlers(),
            (evt.EVT_REQUESTED, prefer_requestor_syntaxes),  # C-GET storage contexts
            *(self.gate.handlers() if self.gate else []),
            *guard_handlers(self.store, self.registry),
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, self.store.handle),
            (evt.EVT_N_CREATE, self.mpps.handle_create),
            (evt.EVT_N_SET, self.mpps.handle_set),
            (evt.EVT_C_FIND, self.qr.handle_find),
            (evt.EVT_C_MOVE, self.qr.handle_move),
            (evt.EVT_C_GET, self.qr.handle_get),
        ]
        self.jobs.start()
        resumed = self.workflow.resume()
        if resumed:
            log.info("resumed %d acquisition waits from the database", resumed)
        waiting = self.manifests.resume()
        if waiting:
            log.info("resumed %d Signed Manifest waits from the database", waiting)
        self.transfers.start()
        ssl_context = server_context(self.config.tls) if self.config.tls else None
        try:
            # No ssl_context for pynetdicom: its accept loop would run the handshake;
            # NodeServer runs it on each connection's thread (node.net.arrival).
            server = self.ae.make_server(
                (cfg.host, cfg.port),
                evt_handlers=handlers,
                server_class=NodeServer,
                gate=self.gate,
                fast_path=self.fast_path,
                tls=ssl_context,
            )
        except OSError as exc:
            problem = f"node.port: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
            raise ConfigError(self.config.source, [problem]) from exc
        assert isinstance(server, NodeServer)  # make_server built it from server_class
        serve_in_background(self.ae, server)
        self.server = server
        log.info(
            "%s listening on %s:%d%s",
            cfg.ae_title,
            cfg.host,
            self.port,
            " (TLS)" if ssl_context else "",
        )
        if self.web is not None:
            try:
                self.web.start()
            except Exception:
                self.stop(grace=0)  # nothing half-started stays behind: DICOM, jobs, workers
                raise

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let associations and in-flight stores finish, then abort."""
        if self.server is None or self.stopped.is_set():
            return
        grace = self.config.node.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        self.server.shutdown()  # no new associations from here on
        if self.web is not None:
            self.web.stop(deadline)  # HTTP requests in progress share the same grace
        if self.gate is not None:
            self.gate.close_all()  # connections still waiting for their request
        fast = self.fast_path
        while self.ae.active_associations and time.monotonic() < deadline:
            # Wait on the association threads rather than sleeping blindly.
            for assoc in list(self.ae.active_associations):
                assoc.join(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
        if fast is not None:
            fast.wait_idle(deadline)
        self.inflight.wait_idle(max(0.0, deadline - time.monotonic()) + 5.0)
        for assoc in list(self.ae.active_associations):
            assoc.abort()
        if fast is not None:
            fast.abort_all()
        self.store.worker.stop(max(0.0, deadline - time.monotonic()) + 5.0)
        self.jobs.shutdown(wait=True)  # a KOS being built is finished, not cut off
        self.registry.custody.abandon()
        self.archive.engine.dispose()
        files = self.archive.files
        # Not clean while a store (ours, or a command's beside us) is between file and row.
        if self.inflight.count == 0 and not files.writes_in_progress():
            files.mark_clean_stop()
        self.stopped.set()
        log.info("%s stopped", self.config.node.ae_title)


def ensure_development_key(config: NodeConfig) -> bool:
    """Create the signing key on first start when ``signing.create_if_missing`` allows it.

    Returns True when a key was created. Only for development: the key is unprotected
    and its certificate self-signed, so the warning is deliberately loud.
    """
    signing = config.signing
    if not signing.create_if_missing or signing.key.exists():
        return False
    from node.signatures.keys import create_key_pair

    create_key_pair(signing.key, signing.certificate, f"{config.node.ae_title} development signer")
    log.warning(
        "!!! created a DEVELOPMENT signing key %s and self-signed certificate %s: "
        "unprotected, not for production; configure signing.key and signing.certificate !!!",
        signing.key,
        signing.certificate,
    )
    return True


def open_archive(config: NodeConfig) -> Archive:
    """The archive and index for a command running beside (or without) a serving node.

    Unlike :func:`build_node` it does not clear the temporary folder: a serving node
    may be writing there.
    """
    files = FileStore(config.storage.archive, fsync=config.storage.fsync)
    files.ensure_folders()
    engine = open_database(config.storage.database)
    return Archive(files, engine, max_inflated=config.storage.max_inflated_size)


def build_node(config: NodeConfig, *, files: FileStore | None = None) -> Node:
    """Wire a node from its configuration; ``files`` lets tests inject a storage layer."""
    files = files or FileStore(config.storage.archive, fsync=config.storage.fsync)
    leftovers = files.prepare()
    if leftovers.removed:
        log.warning("removed %d temporary files left by interrupted writes", leftovers.removed)
    # A clean stop, and no writer of any process died holding a final name since.
    clean = files.take_clean_stop() and not leftovers.linked
    archive = Archive(
        files,
        open_database(config.storage.database),
        max_inflated=config.storage.max_inflated_size,
        resolves_unindexed=True,
    )
    if not clean:
        recovered = recover(archive)
        if recovered.adopted or recovered.quarantined or recovered.busy:
            log.warning(
                "after an unclean stop: %d unindexed files adopted, %d set aside, "
                "%d left to a writer still running",
                recovered.adopted,
                recovered.quarantined,
                recovered.busy,
            )
    registry = AssociationRegistry(AccessPolicy(config), archive, config.node.max_associations)
    inflight = InFlight()
    jobs = Jobs()
    publisher = DocumentPublisher(config, archive)  # one key cache for the node's documents
    queue = TransferQueue(archive.engine)
    sender = TransferSender(config, archive, queue, publisher)
    transfers = TransferService(config, queue, sender, jobs)
    tracker = AcquisitionTracker(
        archive.engine,
        AcquisitionKosBuilder(config, archive, publisher),
        on_built=transfers.on_kos_built,
    )
    workflow = AcquisitionWorkflow(tracker, jobs)
    manifests = SignedManifestReceiver(config, archive, jobs)
    # The MPPS look-up costs a query per instance, so it runs after the answer; a
    # missed trigger is harmless, as every wait is checked again at start and deadline.
    store = StoreService(
        archive, registry, inflight, listeners=[manifests.on_stored], deferred=[workflow.on_stored]
    )
    mpps = MppsService(
        MppsRegistry(archive.engine, config.acquisition.completion_timeout),
        registry,
        workflow.on_completed,
    )

    ae = AE(ae_title=config.node.ae_title)
    cfg = config.node
    gate = ConnectionGate(registry.custody, cfg.acse_timeout, cfg.max_associations)
    # The limit is ours, over both paths (node.services.associations). pynetdicom counts
    # every connection it holds, half-open ones included, so its own check stays above.
    ae.maximum_associations = cfg.max_associations + gate.limit
    ae.maximum_pdu_size = cfg.max_pdu
    ae.network_timeout = cfg.network_timeout
    ae.acse_timeout = cfg.acse_timeout
    ae.dimse_timeout = cfg.dimse_timeout
    # One implementation identity on both association paths (and in the file meta).
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    # Access control is ours (node.access): pynetdicom's own checks stay off.
    ae.require_called_aet = False
    ae.require_calling_aet = []
    contexts = [
        verification_context(),
        mpps_context(),
        *query_retrieve_contexts(),
        *storage_contexts(),
    ]
    for cx in contexts:  # not ae.supported_contexts = ...: that setter drops the roles
        syntax = str(cx.abstract_syntax)
        ae.add_supported_context(syntax, cx.transfer_syntax, cx.scu_role, cx.scp_role)
    qr = QueryRetrieveService(config, archive, registry)
    fast_path = FastStoragePath(config, registry, store) if cfg.fast_path else None
    return Node(
        config=config,
        archive=archive,
        registry=registry,
        store=store,
        inflight=inflight,
        mpps=mpps,
        workflow=workflow,
        jobs=jobs,
        transfers=transfers,
        manifests=manifests,
        ae=ae,
        qr=qr,
        fast_path=fast_path,
        gate=gate,
        web=HttpService(config.http, archive, grace=cfg.shutdown_grace)
        if config.http.enabled
        else None,
    )
