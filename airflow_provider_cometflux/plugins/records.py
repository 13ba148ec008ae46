"""What a task of this provider recorded, read back for the UI: one :class:`Card` per prediction, in order.

Only XComs the tasks pushed are read (``prediction``, ``predictions``, ``images``, ``failures``, ``prediction_ids``,
``prediction_id``, ``return_value``); nothing here calls CometAPI. Older runs lack some of them (``input`` inside
``prediction``, the batch's ``predictions``): a card then shows what the others give.

An image is addressed by its task instance and its position among the task instance's pictures
(:attr:`Picture.index`), never by a path or URL from a request. :func:`stored_image_path` checks the URI the task
recorded before anything is opened.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_cometflux.contract import (
    BATCH_XCOM_KEYS,
    CONTENT_TYPES,
    RECORD_COST,
    RECORD_REUSED_FROM,
    SUCCEEDED,
    XCOM_FAILURES,
    XCOM_IMAGES,
    XCOM_KEYS,
    XCOM_PREDICTION,
    XCOM_PREDICTION_ID,
    XCOM_PREDICTION_IDS,
    XCOM_PREDICTIONS,
    XCOM_RETURN_VALUE,
    XCOM_REVIEW,
    parse_stored_image_name,
)
from airflow_provider_cometflux.models import parse_time

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from sqlalchemy.orm import Session

#: The XCom keys the view reads.
KEYS = XCOM_KEYS
#: The keys that mark a task instance as one of this provider's (``return_value`` alone says nothing).
OWN_KEYS = frozenset(KEYS) - {XCOM_RETURN_VALUE}
#: How long a delivery URL lives after its prediction completed (the service deletes outputs after an hour).
DELIVERY_LIFETIME = timedelta(hours=1)


@dataclass
class Picture:
    """
    One output image of a prediction.

    :param index: its position among the task instance's pictures (what the image route addresses).
    :param kind: ``stored`` (served by the plugin), ``delivery`` (a live delivery URL), ``expired`` (a delivery URL
        past its lifetime) or ``missing`` (a recorded image without a usable location).
    :param uri: the stored URI, kept server-side only.
    :param url: the delivery URL (shown only while alive).
    :param verdict: what a review task decided of it (``kept``, ``rejected``, ``pending``), if one reviewed it.
    """

    index: int
    kind: str
    uri: str = ""
    url: str = ""
    sha256: str = ""
    size: int | None = None
    content_type: str = ""
    verdict: str = ""


@dataclass
class Card:
    """One prediction of a task instance (a single task has one, a batch one per prompt)."""

    task_id: str
    map_index: int
    prompt_index: int | None
    prompt: str = ""
    model: str = ""
    aspect_ratio: str = ""
    seed: str = ""
    output_format: str = ""
    status: str = ""
    predict_time: float | None = None
    prediction_id: str = ""
    error: str = ""
    completed_at: str = ""
    #: what the prediction cost in US dollars (0 when reused), from its record's ``cost``
    cost_usd: float | None = None
    #: the earlier prediction its images were reused from (``reuse_path``)
    reused_from: str = ""
    pictures: list[Picture] = field(default_factory=list)


@dataclass
class TaskImages:
    """Everything one task instance recorded, as cards."""

    task_id: str
    map_index: int
    state: str
    cards: list[Card]

    def picture(self, index: int) -> tuple[Card, Picture] | None:
        """:return: the picture at ``index`` and its card, or ``None``."""
        for card in self.cards:
            for picture in card.pictures:
                if picture.index == index:
                    return card, picture
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def delivery_alive(prediction: Mapping[str, Any], recorded_at: datetime | None, now: datetime) -> bool:
    """
    :param prediction: the recorded prediction (its ``completed_at``, ``data_removed``).
    :param recorded_at: when the XCom was written, used when the prediction has no ``completed_at``.
    :param now: the current time.
    :return: whether its delivery URLs are still served.
    """
    if prediction.get("data_removed"):
        return False
    completed = parse_time(prediction.get("completed_at")) or recorded_at
    if completed is None:
        return False
    return now < completed + DELIVERY_LIFETIME


def _is_web_url(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _fill(card: Card, prediction: Mapping[str, Any] | None) -> None:
    if not isinstance(prediction, Mapping):
        return
    inputs = _as_map(prediction.get("input"))
    metrics = _as_map(prediction.get("metrics"))
    card.prompt = _text(inputs.get("prompt")) or card.prompt
    card.aspect_ratio = _text(inputs.get("aspect_ratio"))
    card.seed = _text(inputs.get("seed"))
    card.output_format = _text(inputs.get("output_format"))
    card.model = _text(prediction.get("model"))
    card.status = _text(prediction.get("status")) or card.status
    card.prediction_id = _text(prediction.get("id")) or card.prediction_id
    card.error = _text(prediction.get("error")) or card.error
    card.completed_at = _text(prediction.get("completed_at"))
    usd = _as_map(prediction.get(RECORD_COST)).get("usd")
    if isinstance(usd, (int, float)) and not isinstance(usd, bool):
        card.cost_usd = float(usd)
    card.reused_from = _text(_as_map(prediction.get(RECORD_REUSED_FROM)).get("prediction_id"))
    predict_time = metrics.get("predict_time")
    if isinstance(predict_time, (int, float)) and not isinstance(predict_time, bool):
        card.predict_time = float(predict_time)


def _pictures(
    card: Card,
    images: Any,
    urls: Any,
    prediction: Mapping[str, Any] | None,
    recorded_at: datetime | None,
    now: datetime,
    counter: list[int],
) -> None:
    """Add the card's pictures: stored images when recorded, else the delivery URLs (alive or expired)."""

    def next_index() -> int:
        counter[0] += 1
        return counter[0] - 1

    if isinstance(images, list) and images:
        for image in images:
            image = image if isinstance(image, Mapping) else {}
            uri = _text(image.get("uri"))
            size = image.get("bytes")
            card.pictures.append(
                Picture(
                    index=next_index(),
                    kind="stored" if uri else "missing",
                    uri=uri,
                    sha256=_text(image.get("sha256")),
                    size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                    content_type=_text(image.get("content_type")),
                )
            )
        return
    if not isinstance(urls, list):
        return
    alive = delivery_alive(prediction or {}, recorded_at, now)
    for url in urls:
        if not _is_web_url(url):
            card.pictures.append(Picture(index=next_index(), kind="missing"))
        elif alive:
            card.pictures.append(Picture(index=next_index(), kind="delivery", url=url))
        else:
            card.pictures.append(Picture(index=next_index(), kind="expired"))


def task_images(
    task_id: str,
    map_index: int,
    state: str,
    xcoms: Mapping[str, Any],
    *,
    recorded_at: datetime | None = None,
    now: datetime | None = None,
) -> TaskImages:
    """
    The cards of one task instance, from its XComs.

    :param task_id: the task.
    :param map_index: its map index (``-1`` unmapped).
    :param state: the task instance's state (shown when nothing else says what happened).
    :param xcoms: its XComs by key (any of :data:`KEYS`).
    :param recorded_at: when its XComs were written (the fallback clock of delivery URLs).
    :param now: the current time (UTC).
    """
    now = now or datetime.now(timezone.utc)
    if isinstance(xcoms.get(XCOM_REVIEW), Mapping):
        return TaskImages(task_id, map_index, state, review_cards(task_id, map_index, xcoms[XCOM_REVIEW]))
    counter = [0]
    batch = any(key in xcoms for key in BATCH_XCOM_KEYS)
    if not batch:
        card = Card(task_id, map_index, None, status=state)
        card.prediction_id = _text(xcoms.get(XCOM_PREDICTION_ID))
        prediction = xcoms.get(XCOM_PREDICTION) if isinstance(xcoms.get(XCOM_PREDICTION), Mapping) else None
        _fill(card, prediction)
        if prediction is None and state in ("failed", "upstream_failed", "up_for_retry"):
            card.error = "The task failed before it recorded a result; its log says why."
        _pictures(card, xcoms.get(XCOM_IMAGES), xcoms.get(XCOM_RETURN_VALUE), prediction, recorded_at, now, counter)
        cards = [card] if (card.prediction_id or card.pictures or prediction) else []
        return TaskImages(task_id, map_index, state, cards)

    ids = _as_list(xcoms.get(XCOM_PREDICTION_IDS))
    predictions = _as_list(xcoms.get(XCOM_PREDICTIONS))
    images = _as_list(xcoms.get(XCOM_IMAGES))
    results = _as_list(xcoms.get(XCOM_RETURN_VALUE))
    failures: dict[int, Mapping[str, Any]] = {}
    for failure in _as_list(xcoms.get(XCOM_FAILURES)):
        if isinstance(failure, Mapping) and isinstance(failure.get("index"), int):
            failures[failure["index"]] = failure
    count = max([len(ids), len(predictions), len(images), len(results), *(i + 1 for i in failures)], default=0)
    cards = []
    for i in range(count):
        card = Card(task_id, map_index, i)
        card.prediction_id = _text(ids[i]) if i < len(ids) else ""
        prediction = predictions[i] if i < len(predictions) and isinstance(predictions[i], Mapping) else None
        _fill(card, prediction)
        failure = failures.get(i)
        if failure is not None:
            card.prompt = card.prompt or _text(failure.get("prompt"))
            card.status = _text(failure.get("status")) or "failed"
            card.error = _text(failure.get("message"))
            card.prediction_id = card.prediction_id or _text(failure.get("prediction_id"))
        elif not card.status:
            card.status = "succeeded" if (i < len(results) and results[i]) else state
        stored = images[i] if i < len(images) else None
        _pictures(card, stored, results[i] if i < len(results) else None, prediction, recorded_at, now, counter)
        cards.append(card)
    return TaskImages(task_id, map_index, state, cards)


def review_cards(task_id: str, map_index: int, review: Mapping[str, Any]) -> list[Card]:
    """
    The cards of a review task: one per image under review (its current round's version), addressed by its slot.

    :param review: the task's XCom ``review``.
    """
    cards = []
    for position, image in enumerate(_as_list(review.get("images"))):
        image = _as_map(image)
        uri = _text(image.get("uri"))
        size = image.get("bytes")
        card = Card(
            task_id,
            map_index,
            position,
            prompt=_text(image.get("prompt")),
            model=_text(image.get("model")),
            status=SUCCEEDED if uri else "missing",
            prediction_id=_text(image.get("prediction_id")),
        )
        card.pictures.append(
            Picture(
                index=position,
                kind="stored" if uri else "missing",
                uri=uri,
                sha256=_text(image.get("sha256")),
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                content_type=_text(image.get("content_type")),
                verdict=_text(image.get("verdict")),
            )
        )
        cards.append(card)
    return cards


def verdicts_by_uri(reviews: Iterable[Any]) -> dict[str, str]:
    """:return: each reviewed image's verdict by its URI, from review XComs (a later round's wins)."""
    found: dict[str, str] = {}
    for review in reviews:
        for round_ in _as_list(_as_map(review).get("rounds")):
            for image in _as_list(_as_map(round_).get("images")):
                image = _as_map(image)
                if image.get("uri") and image.get("verdict"):
                    found[_text(image["uri"])] = _text(image["verdict"])
        for image in _as_list(_as_map(review).get("images")):
            image = _as_map(image)
            if image.get("uri") and image.get("verdict") and _text(image["uri"]) not in found:
                found[_text(image["uri"])] = _text(image["verdict"])
    return found


def mark_verdicts(items: Iterable[TaskImages], verdicts: Mapping[str, str]) -> None:
    """Give every stored picture reviewed elsewhere its verdict."""
    for item in items:
        for card in item.cards:
            for picture in card.pictures:
                if not picture.verdict and picture.uri in verdicts:
                    picture.verdict = verdicts[picture.uri]


def share_verdicts(items: Sequence[TaskImages]) -> None:
    """Give the pictures of ``items`` the verdicts the review tasks among ``items`` gave the same images."""
    mark_verdicts(items, {p.uri: p.verdict for card in all_cards(items) for p in card.pictures if p.verdict and p.uri})


def run_cost(items: Iterable[TaskImages]) -> float | None:
    """What the cards of a run cost in total (reused ones at 0), or ``None`` when no card recorded a cost."""
    costs = [card.cost_usd for item in items for card in item.cards if card.cost_usd is not None]
    return round(sum(costs), 6) if costs else None


def stored_image_path(card: Card, picture: Picture) -> tuple[ObjectStoragePath, str]:
    """
    Check a stored picture's recorded URI and open it as a path, with the task's connection (``conn_id@`` in it).

    Only a name storage itself writes (``<prediction id>-<n>.<png|jpg|webp>``, of this card's prediction) with no
    ``.``/``..`` segment is accepted, so even a hand-written XCom cannot make the plugin read another file.

    :return: the path and the Content-Type to serve it with.
    :raises LookupError: the URI is not one storage wrote.
    """
    from airflow.sdk import ObjectStoragePath

    uri = picture.uri
    parts = urlsplit(uri)
    if not parts.scheme or not parts.path or "\\" in uri or "\x00" in uri or parts.query or parts.fragment:
        raise LookupError("not a stored image URI")
    segments = parts.path.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise LookupError("a relative segment in the stored URI")
    name = parse_stored_image_name(segments[-1])
    if name is None or (card.prediction_id and name[0] != card.prediction_id):
        raise LookupError("not a name storage writes")
    return ObjectStoragePath(uri), CONTENT_TYPES[name[2]]


def _order(items: Iterable[TaskImages]) -> list[TaskImages]:
    return sorted(items, key=lambda t: (t.task_id, t.map_index))


def load_task_images(
    session: Session,
    dag_id: str,
    run_id: str,
    *,
    task_id: str | None = None,
    map_index: int | None = None,
    now: datetime | None = None,
) -> list[TaskImages]:
    """
    Read the XComs of a DAG run's task instances (one task, one map index, or all) from the metadata database.

    :param session: a metadata database session.
    :param dag_id: the DAG.
    :param run_id: the run.
    :param task_id: only this task.
    :param map_index: only this map index (with ``task_id``).
    :param now: the current time (UTC).
    :return: the task instances that recorded something of this provider's, ordered by task and map index.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    query = select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key.in_(KEYS))
    ti_query = select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
    )
    if task_id is not None:
        query = query.where(XComModel.task_id == task_id)
        ti_query = ti_query.where(TaskInstance.task_id == task_id)
        if map_index is not None:
            query = query.where(XComModel.map_index == map_index)
            ti_query = ti_query.where(TaskInstance.map_index == map_index)
    states = {(t, m): _text(s) for t, m, s in session.execute(ti_query)}
    found: dict[tuple[str, int], dict[str, Any]] = {}
    recorded: dict[tuple[str, int], datetime] = {}
    light = query.with_only_columns(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.timestamp)
    rows = [(t, m, k, stamp, (dag_id, run_id, t, m, k, str(stamp))) for t, m, k, stamp in session.execute(light)]
    values = _cached_values([row[4] for row in rows])
    missing = [row for row in rows if row[4] not in values]
    if missing:  # read and parse only what changed since the last request (a batch's XComs are large)
        wanted = {(t, m, k) for t, m, k, _, _ in missing}
        full = query.where(XComModel.task_id.in_({t for t, _, _ in wanted}), XComModel.key.in_({k for *_, k in wanted}))
        for row in session.scalars(full):
            ident = (dag_id, run_id, row.task_id, row.map_index, row.key, str(row.timestamp))
            values[ident] = XComModel.deserialize_value(row)
        _cache_values(values)
    for t, m, k, stamp, ident in rows:
        if ident not in values:
            continue
        found.setdefault((t, m), {})[k] = values[ident]
        when = parse_time(stamp)
        if when is not None and k in (XCOM_PREDICTION, XCOM_PREDICTIONS, XCOM_RETURN_VALUE):
            recorded[(t, m)] = max(recorded.get((t, m), when), when)
    items = _order(
        task_images(t, m, states.get((t, m), ""), xcoms, recorded_at=recorded.get((t, m)), now=now)
        for (t, m), xcoms in found.items()
        if OWN_KEYS & xcoms.keys()
    )
    reviews = [xcoms[XCOM_REVIEW] for xcoms in found.values() if XCOM_REVIEW in xcoms]
    if task_id is not None:  # the reviews of this run's other tasks
        others = select(XComModel).where(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            XComModel.key == XCOM_REVIEW,
            XComModel.task_id != task_id,
        )
        reviews += [XComModel.deserialize_value(row) for row in session.scalars(others)]
    mark_verdicts(items, verdicts_by_uri(reviews))
    return items


#: Parsed XCom values by (dag, run, task, map index, key, timestamp): a changed XCom has a new timestamp.
_VALUES: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
#: The most parsed values kept (a 1,000-prompt batch is five of them).
MAX_CACHED_VALUES = 512
_values_lock = threading.Lock()


def _cached_values(idents: Iterable[tuple[Any, ...]]) -> dict[tuple[Any, ...], Any]:
    with _values_lock:
        found = {}
        for ident in idents:
            if ident in _VALUES:
                _VALUES.move_to_end(ident)
                found[ident] = _VALUES[ident]
        return found


def _cache_values(values: Mapping[tuple[Any, ...], Any]) -> None:
    with _values_lock:
        for ident, value in values.items():
            _VALUES[ident] = value
            _VALUES.move_to_end(ident)
        while len(_VALUES) > MAX_CACHED_VALUES:
            _VALUES.popitem(last=False)


def all_cards(items: Sequence[TaskImages]) -> list[Card]:
    """:return: every card of ``items``, in order."""
    return [card for item in items for card in item.cards]
