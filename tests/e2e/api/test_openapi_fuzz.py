"""schemathesis against the live api's OpenAPI document: no input makes it answer 5xx.

Driven through schemathesis' Python API (a hypothesis strategy per operation) rather than its
pytest plugin, whose lazy fixture loading does not run on pytest 9.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.e2e.auth.conftest import StackFactory, make_stack, start_session

from .conftest import ApiProcess

__all__ = ["make_stack", "start_session"]
EXAMPLES_PER_OPERATION = 40


@pytest.fixture
def live_api(make_stack: StackFactory) -> ApiProcess:
    # With its session service (a login must reach it); the limiter would answer 429 to
    # most examples and hide the handlers from the fuzzer.
    return make_stack(RATE_LIMIT_ENABLED="false", LOG_LEVEL="WARNING").api


def test_no_input_causes_a_server_error(live_api: ApiProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]  # an invalid schema raises here, as it should
    assert {op.path for op in operations} >= {"/v1/users", "/v1/users/{user_id}", "/health"}
    failures: list[str] = []
    statuses: set[int] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:  # type: ignore[type-arg]  # Case's generics are internal
            response = case.call(base_url=live_api.url)
            statuses.add(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:200]}")

        fuzz()
    assert failures == []
    # The fuzzer reached the handlers, not only the validation layer.
    assert {200, 201, 422} <= statuses
