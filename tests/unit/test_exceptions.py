"""Every exception lives in ``exceptions.py``, under one base, named ``...Error``; the old names still import."""

from __future__ import annotations

import inspect
import pickle

import pytest

from airflow_provider_cometflux import exceptions
from airflow_provider_cometflux._compat import AirflowFailException
from airflow_provider_cometflux.exceptions import (
    BodyTooLargeError,
    CometAPIConnectionConfigError,
    CometAPIError,
    CometFluxBatchFailedError,
    CometFluxError,
    CometFluxInputError,
    DeadlineReachedError,
    PredictionMayExistError,
    ProvenanceFormatError,
)

CLASSES = [
    value
    for name, value in vars(exceptions).items()
    if inspect.isclass(value) and value.__module__ == exceptions.__name__ and value.__name__ == name
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_exception_is_a_cometflux_error_named_error(cls: type[Exception]) -> None:
    assert issubclass(cls, CometFluxError)
    assert cls.__name__.endswith("Error")


@pytest.mark.parametrize(
    "cls", [CometFluxInputError, CometAPIConnectionConfigError, CometFluxBatchFailedError, PredictionMayExistError]
)
def test_what_cannot_succeed_on_a_retry_fails_without_retries(cls: type[Exception]) -> None:
    assert issubclass(cls, AirflowFailException)


def test_the_connection_error_is_caught_with_the_others_but_is_no_service_answer() -> None:
    error = CometAPIConnectionConfigError("Connection 'x' was not found")
    assert isinstance(error, CometFluxError) and not isinstance(error, CometAPIError)


def test_old_names_still_import() -> None:
    from airflow_provider_cometflux.exceptions import BodyTooLarge, DeadlineReached
    from airflow_provider_cometflux.provenance import ProvenanceFormatError as FromProvenance

    assert BodyTooLarge is BodyTooLargeError and DeadlineReached is DeadlineReachedError
    assert FromProvenance is ProvenanceFormatError
    assert issubclass(ProvenanceFormatError, ValueError) and issubclass(CometFluxInputError, ValueError)


def test_service_errors_keep_their_fields_through_pickling() -> None:
    error = CometAPIError("busy", http_status=429, prediction_id="p1", transient=True, retry_after=3.0)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.http_status, copy.prediction_id, copy.transient, copy.retry_after) == (429, "p1", True, 3.0)
    assert str(copy) == str(error)
