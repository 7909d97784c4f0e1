"""Thousands of objects: GET and LIST stay correct (speed is bench_emulator.py's business)."""

from __future__ import annotations

import time

import asyncio
import random

import aiohttp
import kubernetes

from tuneloop.emulator import BackgroundEmulator

NAMESPACES = ("many-a", "many-b", "many-c")
PER_NAMESPACE = 1000


async def create_all(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for namespace in NAMESPACES:
            async with session.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": namespace}}) as response:
                assert response.status == 201
        limit = asyncio.Semaphore(16)

        async def create(namespace: str, index: int) -> None:
            body = {"metadata": {"name": f"cm-{index:04d}", "labels": {"shard": str(index % 10)}}, "data": {"index": str(index)}}
            async with limit, session.post(f"{url}/api/v1/namespaces/{namespace}/configmaps", json=body) as response:
                assert response.status == 201, await response.text()
        await asyncio.gather(*(create(ns, i) for ns in NAMESPACES for i in range(PER_NAMESPACE)))


def test_three_thousand_objects(emulator: BackgroundEmulator, core: kubernetes.client.CoreV1Api) -> None:
    asyncio.run(create_all(emulator.url))

    for index in random.Random(7).sample(range(PER_NAMESPACE), 30):
        cm = core.read_namespaced_config_map(f"cm-{index:04d}", "many-b")
        assert (cm.data, cm.metadata.labels) == ({"index": str(index)}, {"shard": str(index % 10)})

    listed = core.list_namespaced_config_map("many-a")
    assert [cm.metadata.name for cm in listed.items] == [f"cm-{i:04d}" for i in range(PER_NAMESPACE)]

    shard = core.list_config_map_for_all_namespaces(label_selector="shard=3")
    assert len(shard.items) == 300 and {cm.metadata.labels["shard"] for cm in shard.items} == {"3"}

    pages, token = [], None
    while True:
        page = core.list_namespaced_config_map("many-c", limit=300, _continue=token)
        pages += [cm.metadata.name for cm in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert pages == [f"cm-{i:04d}" for i in range(PER_NAMESPACE)]

    core.delete_collection_namespaced_config_map("many-a", label_selector="shard in (0,1)")
    assert len(core.list_namespaced_config_map("many-a").items) == 800
    assert len(core.list_namespaced_config_map("many-a", label_selector="shard=0").items) == 0

    core.delete_namespace("many-c")
    deadline = time.monotonic() + 10  # the namespace controller empties it after the DELETE returns
    while core.list_namespaced_config_map("many-c").items and time.monotonic() < deadline:
        time.sleep(0.1)
    assert core.list_namespaced_config_map("many-c").items == []
