"""The API fuzzed from its own OpenAPI description (schemathesis): whatever a client
sends, no server error, and every answer is one the description allows."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.test_web import seeded_web
from wanwitness.web import auth

pytestmark = pytest.mark.integration  # ~25 s: the whole suite, not the fast tier


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    with seeded_web(tmp_path_factory.mktemp("fuzz")) as web:
        yield web


def test_the_api_never_fails_on_what_its_description_allows(fuzzed):
    # schemathesis' own pytest plugin (from_fixture) does not run under pytest 9: each
    # operation of the description is fuzzed here in turn, and every failure is named.
    api = schemathesis.openapi.from_url(fuzzed.url("/openapi.json"))
    token = fuzzed.token()
    failed: dict[str, str] = {}
    labels = []
    for result in api.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        if operation.label == "GET /api/v1/events":
            continue  # a stream that does not end (tested in test_web.py)

        # With the session's cookie and CSRF token, so changes get past the guard and into
        # the code behind it; the guard itself is tested in test_web.py.
        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def call(case) -> None:
            # Every check but "a schema-valid request is accepted": some input is refused
            # for what a schema cannot say (a ticket closed before it opened, a local
            # time the clocks skipped), with 400 and the reason.
            case.call_and_validate(session=fuzzed.http, headers={auth.CSRF_HEADER: token},
                                   excluded_checks=[positive_data_acceptance])

        try:
            call()
        except BaseException as e:  # noqa: BLE001 - collected, then reported together
            if isinstance(e, KeyboardInterrupt):
                raise
            failed[operation.label] = f"{type(e).__name__}: {e}"[:2000]
    assert len(labels) >= 10, labels
    assert not failed, "\n\n".join(f"{k}:\n{v}" for k, v in failed.items())
