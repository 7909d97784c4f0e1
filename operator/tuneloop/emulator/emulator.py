"""The HTTP face of the emulated API server: a kmock `KubernetesEmulator` that serves
kube-apiserver's semantics (see api.py) over real HTTP.

What is kmock's and what is ours:
- kmock's: the request model (`kmock.Request`), the DSL for test-defined reactions
  (`emulator['patch', kmock.resource('v1', 'pods')] << 500` injects a fault), the
  `objects` and `resources` arrays, discovery documents, `Status` error rendering.
- ours: request parsing (kmock's fails on some core paths, see paths.py), routing, the
  whole stateful API in api.py, and `faults` (faults.py): rules that answer chosen requests
  with 409/429/500, drop them, or end or starve watch streams, for reliability tests. kmock's own stateful fallbacks are not registered: its
  DSL matching replays the whole request log for every reaction on every request, and its
  object lookups scan every stored object, which made it crawl past a few hundred objects.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from datetime import UTC, datetime
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from tuneloop.emulator import errors, objects, patches, tables
from tuneloop.emulator.faults import Fault, FaultList, status_body
from tuneloop.emulator.api import ApiServer
from tuneloop.emulator.crds import CrdSource, load_crds
from tuneloop.emulator.paths import parse_api_path

logger = logging.getLogger(__name__)

_TRUE = ("true", "1")


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """An in-memory Kubernetes API server; serve it with `EmulatorServer` (or run it in a
    thread with `BackgroundEmulator`).

    `emulator.objects[...]` (kmock's) is for reading and asserting, history included; write
    through the API (HTTP, or `emulator.api` in the emulator's loop): objects written into
    kmock's array directly get no uid or resourceVersion and are not served.
    """

    history_limit: int | None = 10  # versions kept per object in `objects[...].history`
    watch_history: int = 10_000  # changes kept per resource for watches to resume from
    request_log_limit: int | None = 10_000  # requests kept for kmock's assertions
    bookmark_interval: float = 30.0  # seconds of silence before a watch gets a BOOKMARK
    gc_delay: float = 0.1  # seconds from a DELETE to the garbage collector's cascade
    faults: FaultList = attrs.field(factory=FaultList)  # injected errors (faults.py); none by default

    _api: ApiServer = attrs.field(init=False)
    _request_count: int = attrs.field(init=False, default=0)  # the log is trimmed; ids keep growing
    # (client, verb, resource, subresource) -> requests served: what `GET /metrics` reports.
    request_counts: collections.Counter[tuple[str, str, str, str]] = attrs.field(init=False, factory=collections.Counter)

    def __attrs_post_init__(self) -> None:
        # Not calling kmock's: it registers the DSL fallbacks we replace with direct routing.
        self._api = ApiServer(objects=self._objects, resources=self._resources,
                              history_limit=self.history_limit, watch_history=self.watch_history,
                              gc_delay=self.gc_delay)

    @property
    def api(self) -> ApiServer:
        """The API semantics without HTTP; call it only from the emulator's event loop."""
        return self._api

    def register_crds(self, *sources: CrdSource) -> list[dict[str, Any]]:
        """Serve the CRDs in these dicts, files or directories (see `load_crds`)."""
        return [self._api.register_crd(crd) for crd in load_crds(*sources)]

    def close_watches(self) -> None:
        self._api.hub.close()

    # HTTP.

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            request = await self._parse(raw_request)
            fault = self.faults.select(request) if self.faults else None
            if fault is not None:
                if fault.callback is not None:
                    fault.callback(request)
                if fault.drop:
                    # No answer at all, as when a load balancer or the server dies mid-request.
                    if raw_request.transport is not None:
                        raw_request.transport.abort()
                    return aiohttp.web.Response(status=500)
                if fault.status is not None:
                    return _json_response(status_body(fault), fault.status, fault.headers)
            return await self._handle(request, fault if fault is not None and fault.watch else None)
        except kmock.KubernetesError as e:
            return await self._render_error(e)
        except Exception as e:
            # A bug of the emulator: tests see it as a 500 and in `emulator.errors`.
            logger.exception("The emulator failed on %s %s", raw_request.method, raw_request.path_qs)
            if self._errors:
                self._errors[-1].append(e)
            return await self._render_error(e)

    async def _handle(self, request: kmock.Request, watch_fault: Fault | None = None) -> aiohttp.web.StreamResponse:
        if self._payloads:  # a test's own reactions come first, as in kmock
            try:
                return await kmock.RawHandler._handle(self, request)
            except NotImplementedError:
                pass  # no reaction matched: serve it as the API server would
        if request.url.path == "/metrics" and request.method == "GET":
            return aiohttp.web.Response(text=request_metrics(self.request_counts), content_type="text/plain")
        if request.resource is None or request.resource.plural is None:
            return await self._serve_discovery(request)
        return await self._serve_resource(request, watch_fault)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):
            return await super()._render_error(exc)
        status = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                  "message": exc.message, "reason": exc.reason, "code": exc.status}
        if exc.details:
            status["details"] = exc.details
        return _json_response(status, exc.status)

    def _get_resources(self) -> list[kmock.resource]:
        # kmock's version adds the resource of every stored object, scanning them all on each
        # discovery request; here every served resource is registered, so skip the scan.
        return kmock.KubernetesScaffold._get_resources(self)

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw_request.read()
        path = parse_api_path(raw_request.path)
        query = dict(raw_request.query)
        resource = None
        if path is not None:
            # Keywords: the positional form reads ("", "v1", None) as group="" and plural="v1".
            resource = kmock.resource(group=path.group, version=path.version, plural=path.plural)
        if "dryRun" in query:
            # Persisting a dry run would be worse than refusing it: say so plainly.
            raise errors.bad_request("dryRun is not supported by the Tuneloop API emulator")
        self._request_count += 1
        self.request_counts[_count_key(raw_request, path, query)] += 1
        request = kmock.Request(
            id=self._request_count - 1, raw_request=raw_request, url=raw_request.url,
            method=raw_request.method, params=query, headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies), body=body, text=body.decode("utf-8", "replace"),
            data=_decode_body(body, raw_request.content_type),
            action=_action(raw_request.method, path is not None and path.plural is not None,
                           path is not None and path.name is not None, query),
            resource=resource,
            namespace=path.namespace if path else None,
            name=path.name if path else None,
            subresource=path.subresource if path else None,
        )
        self._requests.append(request)
        if self.request_log_limit is not None and len(self._requests) > 2 * self.request_log_limit:
            del self._requests[:-self.request_log_limit]  # trimmed in batches: amortised O(1)
        return request

    async def _serve_discovery(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.method != "GET":
            raise errors.method_not_allowed()
        documents: dict[str, Callable[[kmock.Request], Awaitable[Any]]] = {
            "/": self._serve_root, "/version": self._serve_server_version,
            "/api": self._serve_api, "/apis": self._serve_apis,
        }
        path = request.url.path.rstrip("/") or "/"
        if path in documents:
            return _json_response(await documents[path](request))
        if request.resource is not None and request.resource.version is None:
            return _json_response(await self._serve_group(request))
        if request.resource is not None:
            return _json_response(await self._serve_version(request))
        raise errors.resource_not_found()

    async def _serve_resource(self, request: kmock.Request, watch_fault: Fault | None = None) -> aiohttp.web.StreamResponse:
        api, query = self._api, request.params
        resource, namespace, name, subresource = request.resource, request.namespace, request.name, request.subresource
        assert resource is not None  # routed here only with a resource
        columns = self._table_columns(request)
        match request.method:
            case "GET" if query.get("watch") in _TRUE:
                return await self._serve_watch(request, columns, watch_fault)
            case "GET" if name:
                found = api.get(resource, namespace, name, subresource)
                if columns is not None and not subresource:
                    return _json_response(tables.table([found], columns, _now(), objects.metadata(found).get("resourceVersion")))
                return _json_response(found)
            case "GET":
                listed = api.list(
                    resource, namespace, label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"), limit=_number(query, "limit", int),
                    continue_token=query.get("continue"))
                if columns is not None:
                    table = tables.table(listed["items"], columns, _now(), listed["metadata"].get("resourceVersion"))
                    table["metadata"].update({k: v for k, v in listed["metadata"].items() if k == "continue"})
                    return _json_response(table)
                return _json_response(listed)
            case "POST" if not name:
                return _json_response(api.create(resource, namespace, request.data), 201)
            case "PUT" if name:
                return _json_response(api.replace(resource, namespace, name, request.data, subresource))
            case "PATCH" if name:
                content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
                return _json_response(api.patch(resource, namespace, name, content_type, request.data, subresource))
            case "DELETE" if name and not subresource:
                return _json_response(api.delete(resource, namespace, name, _delete_options(request)))
            case "DELETE" if not name:
                return _json_response(api.delete_collection(
                    resource, namespace, label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"), options=_delete_options(request)))
        raise errors.method_not_allowed()

    def _table_columns(self, request: kmock.Request) -> list[dict[str, Any]] | None:
        """The printer columns when the client asks for a Table of a custom resource (kubectl)."""
        if request.method != "GET" or not tables.accepts_table(request.headers.get("Accept")):
            return None
        assert request.resource is not None
        return self._api.registry.columns(request.resource)

    async def _serve_watch(self, request: kmock.Request, columns: list[dict[str, Any]] | None = None,
                           fault: Fault | None = None) -> aiohttp.web.StreamResponse:
        query = request.params
        assert request.resource is not None
        events = self._api.watch(
            request.resource, request.namespace, request.name,
            resource_version=query.get("resourceVersion"),
            label_selector=query.get("labelSelector"), field_selector=query.get("fieldSelector"),
            timeout=_number(query, "timeoutSeconds", float),
            bookmark_interval=self.bookmark_interval if query.get("allowWatchBookmarks") in _TRUE else None,
            send_initial_events=query.get("sendInitialEvents") in _TRUE,
        )
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        # kmock's Request keeps the aiohttp request privately; a stream must be prepared on it.
        await response.prepare(request._raw_request)
        try:
            headers = True
            sent = 0
            limit = fault.after_events if fault is not None else None
            while limit is None or sent < limit:
                event = await anext(events, None)
                if event is None:
                    break
                if columns is not None and event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    # As kube-apiserver: each object as a one-row Table, column definitions in the first.
                    obj = event["object"]
                    event = {**event, "object": tables.table([obj], columns, _now(),
                                                             objects.metadata(obj).get("resourceVersion"), headers)}
                    headers = False
                await response.write(_dumps(event) + b"\n")
                sent += 1
            if fault is not None and fault.watch == "silence" and sent == limit:
                await self._hold_silently()
            # Else the end of the stream: its timeout, or a fault's "end", as a clean EOF.
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        except Exception as e:
            logger.exception("The watch stream of %s failed", request.url)
            if self._errors:
                self._errors[-1].append(e)
            status = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 500,
                      "reason": "InternalError", "message": repr(e), "metadata": {}}
            await response.write(_dumps({"type": "ERROR", "object": status}) + b"\n")
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        return response

    async def _hold_silently(self) -> None:
        """A stream that says nothing and never ends: until the client leaves (the handler is
        cancelled) or the emulator stops."""
        while not self._api.hub.closed:
            await asyncio.sleep(0.1)


def _count_key(raw_request: aiohttp.web.BaseRequest, path: Any, query: dict[str, str]) -> tuple[str, str, str, str]:
    """(client, verb, resource, subresource) of a request, verbs as kube-apiserver names them."""
    # The User-Agent's product ("kopf/1.45" -> "kopf"), so a benchmark can tell its own
    # requests from the operator's (kube-apiserver's metric has no such label).
    client = next(iter(raw_request.headers.get("User-Agent", "").split("/")[0].split()), "unknown")
    if path is None or path.plural is None:
        return client, "GET" if raw_request.method == "GET" else raw_request.method, "", ""
    named = path.name is not None
    verb = {"GET": "WATCH" if query.get("watch") in _TRUE else "GET" if named else "LIST",
            "POST": "CREATE", "PUT": "UPDATE", "PATCH": "PATCH",
            "DELETE": "DELETE" if named else "DELETECOLLECTION"}.get(raw_request.method, raw_request.method)
    return client, verb, path.plural, path.subresource or ""


def request_metrics(counts: collections.Counter[tuple[str, str, str, str]]) -> str:
    """`apiserver_request_total` in Prometheus' text format, with a `client` label of ours."""
    lines = ["# HELP apiserver_request_total Requests served, by client (User-Agent product), verb and resource.",
             "# TYPE apiserver_request_total counter"]
    for (client, verb, resource, subresource), count in sorted(counts.items()):
        labels = f'client="{_label(client)}",verb="{verb}",resource="{resource}",subresource="{subresource}"'
        lines.append(f"apiserver_request_total{{{labels}}} {count}")
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _now() -> datetime:
    return datetime.now(UTC)


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=_dumps(payload), status=status, content_type="application/json", headers=headers)


def _decode_body(body: bytes, content_type: str) -> Any:
    if not body:
        return None
    try:
        if content_type == patches.APPLY_PATCH or content_type.endswith("yaml"):
            return yaml.safe_load(body.decode("utf-8"))
        return json.loads(body)
    except (ValueError, yaml.YAMLError) as e:
        raise errors.bad_request(f"the request body is not valid {content_type or 'JSON'}: {e}")


def _action(method: str, has_resource: bool, has_name: bool, query: dict[str, str]) -> kmock.action | None:
    """The kmock action, so that test reactions can filter on it (`emulator['list']`)."""
    if not has_resource:
        return None
    if method == "GET":
        return kmock.action.WATCH if query.get("watch") in _TRUE else kmock.action.FETCH if has_name else kmock.action.LIST
    return {("POST", False): kmock.action.CREATE, ("PATCH", True): kmock.action.UPDATE,
            ("DELETE", True): kmock.action.DELETE}.get((method, has_name))


def _number(query: dict[str, str], name: str, kind: type[int] | type[float]) -> Any:
    if not query.get(name):
        return None
    try:
        return kind(query[name])
    except ValueError:
        raise errors.bad_request(f"{name}: invalid value {query[name]!r}")


def _delete_options(request: kmock.Request) -> dict[str, Any]:
    options = dict(request.data) if isinstance(request.data, dict) else {}
    for name in ("propagationPolicy", "gracePeriodSeconds"):
        if name in request.params:
            options[name] = request.params[name]
    return options
