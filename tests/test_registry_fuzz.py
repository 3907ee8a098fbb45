"""Schema-driven fuzzing of the registry's API (#6) from its own OpenAPI description.

Schemathesis reads ``/openapi.json`` and generates requests for every operation: valid ones
(positive) and ones that break the schema (negative), with random and with real experiment ids.
Every response is checked: never a 5xx, status codes, content types and bodies as the
description says, invalid input refused, valid input accepted, and writes without a valid token
refused with 401. The registry is seeded with the real bundles and replication record of
``registry_bundles``; runs are derandomized with a bounded number of examples per operation, so
the test is deterministic.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

from fairtrial.server import Registry, create_app  # noqa: E402
from fairtrial.server.app import SERVER_LIMITS  # noqa: E402

#: examples per operation and generation mode (positive / negative)
EXAMPLES = 12
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class Seeded:
    store: Path
    token: str
    ids: list[str]  # the two experiments' bundle sha256s


@pytest.fixture(scope="module")
def seeded(registry_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """A registry (SQLite) holding both real bundles and the real replication record."""
    import json

    store = tmp_path_factory.mktemp("fuzz") / "registry.db"
    reg = Registry(store, limits=SERVER_LIMITS)
    token = reg.create_token("fuzz")
    ids = [reg.add_bundle(registry_bundles[k])[0]["id"] for k in ("layernorm", "lr")]
    reg.add_replication(json.loads(registry_bundles["record"].read_text()))
    reg.close()
    return Seeded(store, token, ids)


@pytest.fixture
def fresh(seeded: Seeded, tmp_path: Path) -> Iterator[Seeded]:
    """A copy of the seeded registry for one test, so writes of one test don't reach another."""
    store = tmp_path / "registry.db"
    shutil.copy(seeded.store, store)
    yield Seeded(store, seeded.token, seeded.ids)


def _fuzz(
    schema: Any,
    ids: list[str],
    call: Callable[[Any], Any],
    on_response: Callable[[Any, Any], None],
) -> int:
    """Run every operation of ``schema``: positive and negative cases, with generated path
    parameters and with real experiment ids and task names. Returns how many requests were sent."""
    sent = 0
    unsatisfiable: list[str] = []
    operations = [op.ok() for op in schema.get_all_operations()]
    assert operations, "the OpenAPI description lists no operations"
    for op in operations:
        # generated values everywhere, then real names where the operation takes them
        real: dict[str, Any] = {}
        path = {k: v for k, v in (("ref", ids[0]), ("task", "digits")) if f"{{{k}}}" in op.path}
        if path:
            real["path_parameters"] = path
        query_names = {p.name for p in op.query}
        query = {k: v for k, v in (("a", ids[0]), ("b", ids[1]), ("experiment", ids[1]))}
        if query_names & set(query):
            real["query"] = {k: v for k, v in query.items() if k in query_names}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for overrides in [{}, real] if real else [{}]:
                strategy = op.as_strategy(generation_mode=mode, **overrides)

                @settings(
                    max_examples=EXAMPLES,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    print_blob=True,
                )
                @given(case=strategy)
                def run(case: Any) -> None:
                    nonlocal sent
                    response = call(case)
                    sent += 1
                    on_response(case, response)

                try:
                    run()
                except Unsatisfiable:
                    # an operation without parameters or body has no invalid request to make
                    if mode is GenerationMode.POSITIVE:
                        raise
                    unsatisfiable.append(f"{op.method.upper()} {op.path}")
    return sent


@pytest.fixture(params=["asgi", "loopback"])
def api(request: pytest.FixtureRequest, fresh: Seeded, tmp_path: Path) -> Iterator[Any]:
    """The API's schema, loaded from the app in this process (requests go through ASGI) or from a
    real ``fairtrial serve`` over loopback (requests go over HTTP)."""
    if request.param == "asgi":
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(fresh.store))
        return
    from conftest import RegistryServer

    server = RegistryServer(str(fresh.store), tmp_path)
    try:
        yield schemathesis.openapi.from_url(server.url + "/openapi.json", timeout=30)
    finally:
        server.stop()


def test_fuzz_without_token(api: Any, fresh: Seeded) -> None:
    """No token: every write is refused with 401, every read conforms, nothing is a 5xx."""
    writes: list[int] = []

    def check(case: Any, response: Any) -> None:
        if case.method.upper() in WRITES:
            writes.append(response.status_code)
            assert response.status_code == 401, (case.method, case.path, response.text[:300])
            assert "needs a valid token" in response.json()["error"]
        case.validate_response(response)

    sent = _fuzz(api, fresh.ids, lambda case: case.call(), check)
    assert sent > 200 and len(writes) > 50 and set(writes) == {401}
    # nothing was written: still the two experiments, one replication, no reference set
    reg = Registry(fresh.store)
    try:
        assert reg.search()["total"] == 2
        assert len(reg.replications(fresh.ids[0])) == 1
        assert reg.leaderboard("digits")["total"] == 4
    finally:
        reg.close()


def test_fuzz_with_token(api: Any, fresh: Seeded) -> None:
    """A valid token: writes get past authentication; generated uploads are refused with a
    documented 4xx (never a 5xx), a valid reference change is accepted; reads conform."""
    headers = {"Authorization": f"Bearer {fresh.token}"}
    statuses: dict[str, set[int]] = {}

    def check(case: Any, response: Any) -> None:
        op = f"{case.method.upper()} {case.operation.path}"
        statuses.setdefault(op, set()).add(response.status_code)
        # An upload's validity goes beyond its schema (a verified bundle, a record of a stored
        # experiment's bundle): schema-valid uploads may be refused, with a documented 4xx.
        excluded = [positive_data_acceptance] if case.method.upper() in WRITES else []
        case.validate_response(response, headers=headers, excluded_checks=excluded)

    sent = _fuzz(api, fresh.ids, lambda case: case.call(headers=headers), check)
    assert sent > 200
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    assert statuses["POST /api/bundles"] - {401} <= {413, 415, 422}, statuses
    assert 200 in statuses["PUT /api/tasks/{task}/reference"], statuses
    for op in (
        "GET /api/experiments/{ref}",
        "GET /api/compare",
        "GET /api/tasks/{task}/leaderboard",
    ):
        assert 200 in statuses[op], (op, statuses[op])
    # the fuzzed uploads stored nothing
    reg = Registry(fresh.store)
    try:
        assert reg.search()["total"] == 2
        assert len(reg.replications(fresh.ids[0])) == 1
    finally:
        reg.close()
