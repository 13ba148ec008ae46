"""Every exception of the CometAPI FLUX provider, under one base, :class:`CometFluxError`.

Naming: each name ends in ``Error`` and says what went wrong; :class:`CometAPIError` (and its subclasses) is what
the service answered or a failure to reach it, every other class is the provider's own finding. Classes that also
derive from ``AirflowFailException`` fail the task without Airflow's retries: trying again cannot help (bad input,
an unusable connection) or would pay twice (a create whose answer was lost, a batch with failed prompts).

Every error that came from the service carries the HTTP status, the service's own message and, when one is
known, the prediction id, so a failed task's log says what went wrong remotely and which prediction it was.
None of them ever holds the API key.
"""

from __future__ import annotations

from airflow_provider_cometflux._compat import AirflowException, AirflowFailException


class CometFluxError(AirflowException):
    """The base of every exception this provider raises; catch it to catch them all."""


class CometAPIError(CometFluxError):
    """
    An error answered by CometAPI, or a failure to reach it.

    :param message: the service's own error text (or a description of the transport failure).
    :param http_status: the HTTP status of the answer, ``None`` when no answer arrived.
    :param prediction_id: the prediction the call was about, when known.
    :param error_type: the service's error ``type`` (CometAPI shape) or ``title`` (problem+json shape).
    :param error_code: the service's error ``code``, when it gave one.
    :param transient: whether trying again later may succeed (a 429, a 503, a lost connection...).
    :param retry_after: the seconds the service asked to wait (its ``Retry-After``), when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        prediction_id: str | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.retry_after = retry_after
        self.http_status = http_status
        self.prediction_id = prediction_id
        self.error_type = error_type
        self.error_code = error_code
        self.transient = transient
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.http_status is not None:
            where.append(f"HTTP {self.http_status}")
        if self.prediction_id:
            where.append(f"prediction {self.prediction_id}")
        if self.error_code:
            where.append(f"code {self.error_code}")
        prefix = f"CometAPI error ({', '.join(where)})" if where else "CometAPI error"
        return f"{prefix}: {self.message}"

    def __reduce__(self):  # keep keyword arguments through pickling (Airflow ships exceptions across processes)
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "http_status": self.http_status,
                    "prediction_id": self.prediction_id,
                    "error_type": self.error_type,
                    "error_code": self.error_code,
                    "transient": self.transient,
                    "retry_after": self.retry_after,
                },
            ),
        )


def _rebuild(cls: type[CometAPIError], message: str, kwargs: dict) -> CometAPIError:
    return cls(message, **kwargs)


class CometAPIAuthError(CometAPIError):
    """The service refused the API key (HTTP 401 or 403)."""


class CometAPIConnectionConfigError(CometFluxError, AirflowFailException):
    """The Airflow connection is missing or has no API key; the message says how to set one up."""


class PredictionMayExistError(CometAPIError, AirflowFailException):
    """
    A create request was sent but its answer was lost: the prediction may exist and is not resubmitted.

    It fails the task without Airflow's retries too: a retry would create (and pay for) a second prediction.
    """


class PredictionFailedError(CometAPIError):
    """A prediction ended ``failed``, ``canceled`` or ``aborted``, or could not be watched to its end."""


class PredictionTimeoutError(CometAPIError):
    """A prediction did not finish before the task's deadline."""


class CometFluxInputError(CometFluxError, AirflowFailException, ValueError):
    """
    Input that the service would refuse (or charge for and then fail), caught before any request.

    It fails the task without retries: the same input would fail the same way again.
    """


class OutputExpiredError(CometAPIError):
    """A delivery URL answered 403/404/410: the service has already deleted the output."""


class OutputTooLargeError(CometAPIError, AirflowFailException):
    """An output is larger than ``max_output_bytes``: nothing of it is kept, and a retry would fetch the same."""


class IncompleteDownloadError(CometAPIError):
    """A download ended before its Content-Length (retried, then raised)."""


class OutputsRemovedError(PredictionFailedError, AirflowFailException):
    """
    A prediction succeeded but its outputs are gone (``data_removed``): they will not come back, so no retry.
    """


class CometFluxBatchFailedError(CometFluxError, AirflowFailException):
    """Some prompts of a batch failed; the others' images are in XCom. Not retried: that would pay for them again."""


class CometFluxBudgetError(CometFluxError, AirflowFailException):
    """
    The task's ``max_cost_usd`` would be passed: refused before any request (naming the estimate and the budget), or,
    in a batch, raised once every prompt is recorded, the ones creation stopped for listed as ``not_created``. Not
    retried: a retry would meet the same budget.
    """


class ProvenanceFormatError(CometFluxError, ValueError):
    """A sidecar or manifest that is not in a format this version of the provider can read."""


class RecordNotFoundError(CometFluxError, FileNotFoundError):
    """A stored image without a record (sidecar) beside it, or a name that is not a stored image's."""


class OutputStorageError(CometFluxError):
    """
    A prediction succeeded but its images could not be stored in ``output_path``. It is retried: on Airflow 3.3+
    a retry reattaches to the same prediction (through the task state store) and copies its images again.

    :param message: what failed and how to recover.
    :param prediction_id: the prediction whose images were not stored.
    """

    def __init__(self, message: str, *, prediction_id: str | None = None) -> None:
        self.message = message
        self.prediction_id = prediction_id
        super().__init__(message)

    def __reduce__(self):  # keep the prediction id through pickling
        return (_rebuild_storage_error, (type(self), self.message, self.prediction_id))


def _rebuild_storage_error(cls: type[OutputStorageError], message: str, prediction_id: str | None):
    return cls(message, prediction_id=prediction_id)


class BodyTooLargeError(CometFluxError):
    """An answer longer than the limit its reader was given (the transport turns it into a :class:`CometAPIError`)."""


class DeadlineReachedError(CometFluxError):
    """The deadline of a request passed while its answer was still arriving (the transport reports it)."""


#: The names these had before every exception lived here (``hooks.transport.BodyTooLarge``, ...).
BodyTooLarge = BodyTooLargeError
DeadlineReached = DeadlineReachedError
