"""The operator facing hostile objects and endpoints (issue 13): bounded, owned, never stuck.

* a metrics endpoint that streams without end is cut off at MAX_SCRAPE_BYTES (a real aiohttp
  server over HTTP), instead of growing the operator to gigabytes;
* only pods the Job owns are read: a labelled pod anyone can create is not scraped;
* a bug met while parsing a spec is an InvalidSpec problem, not an endless kopf retry.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp import web

from tuneloop.operator import handlers
from tuneloop.operator.scrape import MAX_SCRAPE_BYTES, ScrapeTooLarge, fetch_trainer_metrics
from tuneloop.operator.status import pod_rank


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve_and_fetch(handler: Any, **kwargs: Any) -> str:
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return await fetch_trainer_metrics(f"http://127.0.0.1:{port}/metrics", **kwargs)
    finally:
        await runner.cleanup()


async def endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    chunk = b"# HELP x y\n" * 10_000
    sent = 0
    try:
        while sent < 64 * MAX_SCRAPE_BYTES:  # the client must hang up long before this
            await response.write(chunk)
            sent += len(chunk)
    except ConnectionError:
        pass  # the client hung up: what we want
    return response


async def announced_large(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * (MAX_SCRAPE_BYTES + 1))


async def small(request: web.Request) -> web.Response:
    return web.Response(text="tuneloop_trainer_step 3\n")


def test_endless_metrics_endpoint_is_cut_off() -> None:
    with pytest.raises(ScrapeTooLarge, match="more than"):
        asyncio.run(serve_and_fetch(endless, timeout=30))


def test_announced_large_body_is_refused_before_reading() -> None:
    with pytest.raises(ScrapeTooLarge, match="announces"):
        asyncio.run(serve_and_fetch(announced_large))


def test_normal_exposition_still_reads() -> None:
    assert asyncio.run(serve_and_fetch(small)) == "tuneloop_trainer_step 3\n"


def pod(name: str, owners: list[str], rank: str = "0") -> dict:
    return {"metadata": {"name": name, "ownerReferences": [{"uid": u} for u in owners],
                         "annotations": {"batch.kubernetes.io/job-completion-index": rank}}}


def test_only_pods_the_job_owns_are_read() -> None:
    job = {"metadata": {"uid": "job-uid"}}
    index = {("ml", "demo"): [pod("real", ["job-uid"]), pod("planted", []), pod("other", ["other-uid"])]}
    assert [p["metadata"]["name"] for p in handlers.owned_pods(index, "ml", "demo", job)] == ["real"]


def test_a_non_numeric_completion_index_is_no_rank() -> None:
    assert pod_rank(pod("p", [], rank="zero")) == -1
    assert pod_rank(pod("p", [], rank="2")) == 2


def test_a_bug_in_the_checks_becomes_a_problem_not_a_retry_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise TypeError("argument of type 'int' is not iterable")

    monkeypatch.setattr(handlers, "parse_spec", broken)  # injects the fault; parse() must contain it
    parsed, problems = handlers.parse({"task": "regression"}, "demo", "ml")
    assert parsed is None
    assert [p.path for p in problems] == ["spec"]
    assert "TypeError" in problems[0].message and "report" in problems[0].message
