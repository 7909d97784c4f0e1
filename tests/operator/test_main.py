"""The entry point's flags and the one startup function that configures kopf."""

from __future__ import annotations

import logging

import kopf
import pytest

from tuneloop.operator import main
from tuneloop.operator.config import OperatorConfig


@pytest.mark.parametrize("standalone, priority", [(True, None), (False, 7)])
def test_configure_sets_every_kopf_setting(monkeypatch: pytest.MonkeyPatch, standalone: bool, priority: int | None) -> None:
    monkeypatch.setattr(main, "Kube", lambda: "kube")
    settings = kopf.OperatorSettings()
    memo = kopf.Memo(config=OperatorConfig(), standalone=standalone, priority=priority, clusterwide=False, metrics_port=0)
    main.configure(settings=settings, memo=memo, logger=logging.getLogger("test"))
    assert settings.watching.server_timeout and settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.watching.connect_timeout and settings.networking.request_timeout
    assert settings.watching.inactivity_timeout == 70 and settings.networking.enforce_retry_after is True
    assert settings.watching.chunk_size == 500  # paged initial lists: bounded memory at a restart
    assert settings.persistence.finalizer == "tuneloop.dev/finalizer"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.posting.enabled and settings.posting.level == logging.ERROR
    assert settings.peering.name == "tuneloop"
    assert settings.peering.standalone is standalone and settings.peering.mandatory is not standalone
    assert settings.peering.priority == priority if priority is not None else settings.peering.priority > 0
    assert memo.kube == "kube" and memo.written == {} and memo.parsed == {} and memo.job_created == {}


def test_flags() -> None:
    args = main.parse_args(["-n", "ml", "-n", "team-*", "--standalone", "--liveness", "http://0.0.0.0:8080/healthz"])
    assert args.namespace == ["ml", "team-*"] and args.standalone and args.liveness.endswith("/healthz")
    assert main.parse_args([]).namespace == []  # all namespaces
    with pytest.raises(SystemExit):
        main.parse_args(["-n", "ml", "--all-namespaces"])
