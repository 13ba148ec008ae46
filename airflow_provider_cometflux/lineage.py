"""OpenLineage for the operators and the sensor: what a task wrote (its output folders) and which predictions it ran.

Lineage tools see one output dataset per output folder (never one per image), named the way OpenLineage names
object storage (``file`` + ``/abs/path``, ``s3://bucket`` + ``key``, ``gs://bucket`` + ``key``, ...), and a run
facet ``cometflux_prediction`` with the model, the prediction ids and what they cost; a task that ran exactly one
prediction also carries the standard ``externalQuery`` facet (``source: cometapi``). Without the OpenLineage provider
installed nothing here imports it and :func:`operator_lineage` returns ``None``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any
from urllib.parse import urlsplit

#: The run facet's key in an OpenLineage event's ``run.facets``.
PREDICTION_FACET = "cometflux_prediction"
#: ``source`` of the ``externalQuery`` run facet.
EXTERNAL_SOURCE = "cometapi"
#: fsspec protocol -> the scheme OpenLineage's naming uses for it.
_SCHEMES = {"gcs": "gs", "s3a": "s3", "s3n": "s3", "local": "file"}


def dataset_name(folder: str) -> tuple[str, str]:
    """
    The OpenLineage ``(namespace, name)`` of an output folder, as OpenLineage names object storage.

    A local folder is ``("file", "/absolute/path")`` (``file://host`` for a file URI with a host); a bucket path is
    ``("s3://bucket", "prefix/key")``, ``("gs://bucket", ...)``, ... (a connection id in the URI, as in
    ``s3://conn_id@bucket/key``, is left out; a bucket's root is named ``/``).

    :param folder: the output folder as a URI or a local path.
    """
    text = str(folder)
    if "://" not in text:
        return "file", _folder_path(str(pathlib.Path(text).resolve()))
    parts = urlsplit(text)
    scheme = _SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    host = parts.netloc.rpartition("@")[2]
    if scheme == "file":
        return (f"file://{host}" if host else "file"), _folder_path(parts.path)
    key = parts.path.strip("/")
    return f"{scheme}://{host}", key or "/"


def _folder_path(path: str) -> str:
    """An absolute path without a trailing slash (``/`` for the root)."""
    return "/" + path.strip("/")


def operator_lineage(
    *,
    model: str,
    prediction_ids: Sequence[str],
    output_folders: Sequence[str],
    failed: bool = False,
    cost: Mapping[str, Any] | None = None,
) -> Any:
    """
    The ``OperatorLineage`` a task returns from ``get_openlineage_facets_on_complete`` / ``..._on_failure``.

    :param model: ``owner/name`` of the model (empty when the task does not know it, as a sensor may not).
    :param prediction_ids: the predictions the task created or watched, in order (empty ones are skipped).
    :param output_folders: the folders images were stored in (the task's ``output_path``; a mapped task or a
        batch still has one), each reported once; empty when nothing was stored.
    :param failed: the task failed; recorded in the run facet (the event's type already says FAIL).
    :param cost: the task's XCom ``cost`` (``{"usd", "images", "predictions", "reused"}``), once recorded.
    :return: an ``airflow.providers.openlineage.extractors.OperatorLineage``, or ``None`` when the OpenLineage
        provider is not installed.
    """
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None

    ids = [str(pid) for pid in prediction_ids if pid]
    outputs = []
    seen: set[tuple[str, str]] = set()
    for folder in output_folders:
        if not folder:
            continue
        namespace, name = dataset_name(str(folder))
        if (namespace, name) not in seen:
            seen.add((namespace, name))
            outputs.append(Dataset(namespace=namespace, name=name))
    cost = cost or {}
    run_facets: dict[str, Any] = {
        PREDICTION_FACET: prediction_facet_class()(
            model=str(model) if model else None,
            predictionIds=ids,
            failed=bool(failed),
            costUsd=cost.get("usd"),
            images=cost.get("images"),
            reusedPredictions=cost.get("reused"),
        )
    }
    if len(ids) == 1:
        from airflow.providers.common.compat.openlineage.facet import ExternalQueryRunFacet

        run_facets["externalQuery"] = ExternalQueryRunFacet(externalQueryId=ids[0], source=EXTERNAL_SOURCE)
    return OperatorLineage(outputs=outputs, run_facets=run_facets)


@cache
def prediction_facet_class() -> type:
    """
    The run facet class, built on first use so that the OpenLineage client is imported only when lineage is asked
    for. It is reachable as ``airflow_provider_cometflux.lineage.CometFluxPredictionRunFacet`` (for pickling).

    Fields: ``model`` (``owner/name``, ``None`` when the task does not know it), ``predictionIds`` (the service's
    ids, in order), ``failed``, ``costUsd`` (what the task's predictions cost, reused ones at 0; ``None`` when not
    known), ``images`` (the images recorded), ``reusedPredictions`` (how many were reused from ``reuse_path``).
    """
    import attr
    from openlineage.client.generated.base import RunFacet

    @attr.define
    class CometFluxPredictionRunFacet(RunFacet):
        """The predictions a task ran at CometAPI, and their model."""

        model: str | None = None
        predictionIds: list[str] = attr.field(factory=list)  # OpenLineage facets use camelCase
        failed: bool = False
        costUsd: float | None = None
        images: int | None = None
        reusedPredictions: int | None = None

    CometFluxPredictionRunFacet.__module__ = __name__
    CometFluxPredictionRunFacet.__qualname__ = "CometFluxPredictionRunFacet"
    return CometFluxPredictionRunFacet


def __getattr__(name: str) -> Any:
    if name == "CometFluxPredictionRunFacet":
        return prediction_facet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
