"""The FastAPI app the API server mounts at :data:`~airflow_provider_cometflux.plugins.URL_PREFIX`.

Routes (every one behind Airflow's own ``requires_access_dag``: a user the auth manager authenticated, who may
read the DAG's XComs; 401/403 otherwise, before anything is read):

- ``GET /ti/{dag_id}/{run_id}/{task_id}?map_index=N``: the Images view of one task instance (no usable
  ``map_index``, as the UI sends for an unmapped task: every map index of the task).
- ``GET /run/{dag_id}/{run_id}?page=N&status=S&verdict=V&task=T``: the gallery of a DAG run, every task instance
  that recorded images, :data:`PAGE_SIZE` cards a page, filtered by status, review verdict and task.
- ``GET /image/{dag_id}/{run_id}/{task_id}/{map_index}/{index}``: the bytes of one stored image, streamed from
  where the task stored it.
- ``GET /thumb/{dag_id}/{run_id}/{task_id}/{map_index}/{index}``: its thumbnail (made once, cached; see
  :mod:`.thumbnails`); what the grids and the review's Required Actions show.
- ``GET /kept/{dag_id}/{run_id}.zip``: the run's kept images (what its review tasks returned) as one zip, streamed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from airflow_provider_cometflux.contract import KEPT, VERDICTS
from airflow_provider_cometflux.plugins.records import (
    Card,
    Picture,
    TaskImages,
    load_task_images,
    run_cost,
    share_verdicts,
    stored_image_path,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
#: Cards on one page of the gallery.
PAGE_SIZE = 48
#: Pages may show their own images and delivery images; they run no script and cannot be framed elsewhere.
PAGE_CSP = "default-src 'none'; img-src 'self' http: https:; style-src 'unsafe-inline'; frame-ancestors 'self'"
#: A review's next round serves new images at the same addresses: browsers ask again (a 304 when unchanged).
IMAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-cache",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
:root { color-scheme: light dark; --muted: #6b7280; --line: rgba(127,127,127,.25); --card: rgba(127,127,127,.06); }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 16px; }
h1 { font-size: 18px; margin: 0 0 4px; } .sub { color: var(--muted); margin: 0 0 16px; }
a { color: #2563eb; } .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 16px; }
.card { border: 1px solid var(--line); border-radius: 10px; background: var(--card); overflow: hidden; }
.pics { display: flex; flex-wrap: wrap; gap: 4px; background: rgba(127,127,127,.12); }
.pics img { display: block; width: 100%; height: auto; }
.pics.multi img { width: calc(50% - 2px); }
.note { padding: 28px 12px; text-align: center; color: var(--muted); width: 100%; }
.body { padding: 10px 12px 12px; } .prompt { font-weight: 600; margin: 0 0 8px; word-break: break-word; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 0; font-size: 12px; }
dt { color: var(--muted); } dd { margin: 0; word-break: break-all; }
.status { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; background: var(--line); }
.status.succeeded { background: #16a34a33; } .status.failed, .status.canceled, .status.aborted,
.status.not_created, .status.timeout, .status.error { background: #dc262633; }
.error { color: #dc2626; margin: 6px 0 8px; white-space: pre-wrap; word-break: break-word; }
.empty { color: var(--muted); }
.verdict { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; margin: 4px; }
.verdict.kept { background: #16a34a; color: #fff; } .verdict.rejected { background: #dc2626; color: #fff; }
.verdict.pending { background: #d97706; color: #fff; } .pic { position: relative; width: 100%; }
.pics.multi .pic { width: calc(50% - 2px); } .pic .verdict { position: absolute; top: 0; left: 0; }
.pics .pic img { width: 100%; aspect-ratio: 1; object-fit: cover; }
form.filters { margin: 0 0 12px; display: flex; gap: 8px; flex-wrap: wrap; align-items: center; }
.pages { margin: 16px 0; display: flex; gap: 12px; }
</style></head>
<body>
<h1>{{ title }}</h1>
<p class="sub">{{ subtitle }}{% if other_href %} · <a href="{{ other_href }}" target="_top">{{ other_label }}</a>
{% endif %}</p>
{% if filters %}<form class="filters" method="get">
  <label>status <select name="status"><option value="">any</option>{% for s in filters.statuses %}
    <option{% if s == filters.status %} selected{% endif %}>{{ s }}</option>{% endfor %}</select></label>
  <label>verdict <select name="verdict"><option value="">any</option>{% for v in filters.verdicts %}
    <option{% if v == filters.verdict %} selected{% endif %}>{{ v }}</option>{% endfor %}</select></label>
  <label>task <select name="task"><option value="">any</option>{% for t in filters.tasks %}
    <option{% if t == filters.task %} selected{% endif %}>{{ t }}</option>{% endfor %}</select></label>
  <button type="submit">Filter</button>
  {% if filters.zip_href %}<a href="{{ filters.zip_href }}" download>Download the kept images (zip)</a>{% endif %}
</form>{% endif %}
{% if not cards %}<p class="empty">{{ empty }}</p>{% endif %}
<div class="grid">
{% for c in cards %}
<div class="card" data-prediction-id="{{ c.prediction_id }}">
  <div class="pics{% if c.pictures|length > 1 %} multi{% endif %}">
  {% for p in c.pictures %}
    {% if p.kind == "stored" %}<a class="pic" href="{{ p.src }}" target="_blank">{% if p.verdict %}<span
      class="verdict {{ p.verdict }}">{{ p.verdict }}</span>{% endif %}<img src="{{ p.thumb }}"
      alt="{{ c.prompt }}" loading="lazy" width="320" height="320"></a>
    {% elif p.kind == "delivery" %}<img src="{{ p.url }}" alt="{{ c.prompt }}" loading="lazy"
      referrerpolicy="no-referrer">
    {% elif p.kind == "expired" %}<div class="note">The delivery URL has expired (the service deletes outputs an hour
      after the prediction). Set <code>output_path</code> to keep copies.</div>
    {% else %}<div class="note">This image was not recorded where it can be read.</div>{% endif %}
  {% else %}<div class="note">{{ "No image: the prediction did not succeed." if c.error else "No image." }}</div>
  {% endfor %}
  </div>
  <div class="body">
    <p class="prompt">{{ c.prompt or "(prompt not recorded)" }}</p>
    {% if c.error %}<p class="error">{{ c.error }}</p>{% endif %}
    <dl>
      <dt>status</dt><dd><span class="status {{ c.status }}">{{ c.status or "unknown" }}</span></dd>
      {% if show_task %}<dt>task</dt><dd><a href="{{ c.ti_href }}">{{ c.task_label }}</a></dd>{% endif %}
      {% if c.prompt_index is not none %}<dt>prompt #</dt><dd>{{ c.prompt_index }}</dd>{% endif %}
      {% if c.model %}<dt>model</dt><dd>{{ c.model }}</dd>{% endif %}
      {% if c.aspect_ratio %}<dt>aspect ratio</dt><dd>{{ c.aspect_ratio }}</dd>{% endif %}
      {% if c.seed %}<dt>seed</dt><dd>{{ c.seed }}</dd>{% endif %}
      {% if c.output_format %}<dt>format</dt><dd>{{ c.output_format }}</dd>{% endif %}
      {% if c.predict_time is not none %}<dt>prediction time</dt><dd>{{ "%.2f"|format(c.predict_time) }} s</dd>
      {% endif %}
      {% if c.cost_usd is not none %}<dt>cost</dt><dd>${{ "%.4f"|format(c.cost_usd) }}{% if c.reused_from %}
      (reused from {{ c.reused_from }}){% endif %}</dd>{% endif %}
      {% if c.prediction_id %}<dt>prediction</dt><dd>{{ c.prediction_id }}</dd>{% endif %}
      {% for p in c.pictures %}{% if p.sha256 %}<dt>sha256{% if c.pictures|length > 1 %} #{{ loop.index0 }}
      {% endif %}</dt><dd>{{ p.sha256 }}</dd>{% endif %}{% endfor %}
    </dl>
  </div>
</div>
{% endfor %}
</div>
{% if pages %}<p class="pages">{% if pages.previous %}<a href="{{ pages.previous }}">previous</a>{% endif %}
<span>page {{ pages.number }} of {{ pages.count }}</span>
{% if pages.next %}<a href="{{ pages.next }}">next</a>{% endif %}</p>{% endif %}
</body></html>
"""


def _template() -> Any:
    from jinja2 import Environment

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(_TEMPLATE)


def _parse_map_index(value: str | None) -> int | None:
    """The UI leaves ``{MAP_INDEX}`` unfilled for an unmapped task: anything but an integer means "every index"."""
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= -1 else None


def _card_view(request: Request, dag_id: str, run_id: str, item: TaskImages, card: Card) -> dict[str, Any]:
    label = item.task_id if item.map_index < 0 else f"{item.task_id} [{item.map_index}]"
    pictures = []
    for picture in card.pictures:
        src = thumb = ""
        if picture.kind == "stored":
            where = {
                "dag_id": dag_id,
                "run_id": run_id,
                "task_id": item.task_id,
                "map_index": str(item.map_index),
                "index": str(picture.index),
            }
            src = request.url_for("image", **where).path
            thumb = request.url_for("thumb", **where).path
        pictures.append(
            {
                "kind": picture.kind,
                "src": src,
                "thumb": thumb,
                "url": picture.url,
                "sha256": picture.sha256,
                "verdict": picture.verdict,
            }
        )
    ti_href = request.url_for("task_images", dag_id=dag_id, run_id=run_id, task_id=item.task_id).include_query_params(
        map_index=item.map_index
    )
    return {
        "prompt": card.prompt,
        "error": card.error,
        "status": card.status,
        "model": card.model,
        "aspect_ratio": card.aspect_ratio,
        "seed": card.seed,
        "output_format": card.output_format,
        "predict_time": card.predict_time,
        "cost_usd": card.cost_usd,
        "reused_from": card.reused_from,
        "prediction_id": card.prediction_id,
        "prompt_index": card.prompt_index,
        "pictures": pictures,
        "task_label": label,
        "ti_href": f"{ti_href.path}?{ti_href.query}",
    }


def _page(
    request: Request,
    *,
    dag_id: str,
    run_id: str,
    items: list[TaskImages],
    shown: list[tuple[TaskImages, Card]] | None = None,
    **texts: Any,
) -> HTMLResponse:
    chosen = shown if shown is not None else [(item, card) for item in items for card in item.cards]
    cards = [_card_view(request, dag_id, run_id, item, card) for item, card in chosen]
    texts.setdefault("filters", None)
    texts.setdefault("pages", None)
    body = _template().render(cards=cards, **texts)
    return HTMLResponse(body, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"})


def _session() -> Iterator[Session]:
    """A session of its own per request, as Airflow's ``SessionDep`` gives (the scoped one is per thread, and
    FastAPI may open a dependency and run its route in different threads, so concurrent requests collided)."""
    from airflow.utils.session import create_session

    with create_session(scoped=False) as session:
        yield session


def task_images_source(session: Annotated[Any, Depends(_session)]) -> Any:
    """
    The reader of task records (a FastAPI dependency, so a test can serve known records).

    :return: a callable ``(dag_id, run_id, *, task_id=None, map_index=None) -> list[TaskImages]``.
    """

    def read(dag_id: str, run_id: str, *, task_id: str | None = None, map_index: int | None = None) -> Any:
        return load_task_images(session, dag_id, run_id, task_id=task_id, map_index=map_index)

    return read


def _no_wildcard(dag_id: str) -> None:
    # Airflow's "~" means "any DAG" in its own routes; here a DAG is always named
    if dag_id == "~":
        raise HTTPException(404, "Name a DAG.")


@dataclass
class _Found:
    """A stored image the routes may serve: checked, opened, its size now."""

    card: Card
    picture: Picture
    path: Any
    content_type: str
    size: int
    where: str


def _stored_image(source: Any, dag_id: str, run_id: str, task_id: str, map_index: int, index: int) -> _Found:
    """One stored image addressed by task instance and position, its recorded URI checked; 404/409 otherwise."""
    _no_wildcard(dag_id)
    items = source(dag_id, run_id, task_id=task_id, map_index=map_index)
    found = items[0].picture(index) if items else None
    if found is None or found[1].kind != "stored":
        raise HTTPException(404, "No stored image there.")
    card, picture = found
    where = f"{dag_id}/{run_id}/{task_id}[{map_index}] #{index}"
    try:
        path, content_type = stored_image_path(card, picture)
        size = path.stat().st_size if path.is_file() else None
    except LookupError as exc:
        log.warning("Refusing the recorded URI of %s: %s", where, exc)
        raise HTTPException(404, "No stored image there.") from None
    except Exception as exc:
        log.warning("Cannot read the stored image of %s: %s", where, exc)
        raise HTTPException(404, "The stored image cannot be read.") from None
    if size is None:
        raise HTTPException(404, "The stored image is gone.")
    if picture.size is not None and picture.size != size:
        raise HTTPException(409, "The stored image has changed since the task stored it.")
    return _Found(card, picture, path, content_type, size, where)


def _stream(found: _Found) -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        with found.path.open("rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                yield chunk

    headers = {**IMAGE_HEADERS, "Content-Length": str(found.size)}
    return StreamingResponse(chunks(), media_type=found.content_type, headers=headers)


class _Sink:
    """What ``zipfile`` writes into: handed out chunk by chunk (no seeking, so the zip uses data descriptors)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _zip_chunks(images: list[_Found]) -> Iterator[bytes]:
    """A zip of ``images`` (stored, not compressed again), yielded as it is written."""
    import zipfile

    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]
        for number, found in enumerate(images, start=1):
            name = f"{number:04d}-{found.path.name}"
            try:
                with found.path.open("rb") as source, archive.open(name, "w", force_zip64=True) as target:
                    while chunk := source.read(CHUNK_SIZE):
                        target.write(chunk)
                        yield sink.take()
            except OSError as exc:  # a file gone since the listing: the zip goes on without it
                log.warning("Leaving %s out of the zip: %s", found.where, exc)
            yield sink.take()
    yield sink.take()


DagId = Annotated[str, Path(min_length=1, max_length=250)]
RunId = Annotated[str, Path(min_length=1, max_length=250)]
TaskId = Annotated[str, Path(min_length=1, max_length=250)]
Source = Annotated[Any, Depends(task_images_source)]


def create_app() -> FastAPI:
    """:return: the plugin's FastAPI app, every route requiring DAG read access through Airflow's auth manager."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    router = APIRouter(dependencies=[Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.XCOM))])

    @router.get("/ti/{dag_id}/{run_id}/{task_id}", name="task_images", response_class=HTMLResponse)
    def task_images_page(
        request: Request,
        dag_id: DagId,
        run_id: RunId,
        task_id: TaskId,
        source: Source,
        map_index: Annotated[str | None, Query(max_length=20)] = None,
    ) -> HTMLResponse:
        """The Images view of one task instance."""
        _no_wildcard(dag_id)
        index = _parse_map_index(map_index)
        items = source(dag_id, run_id, task_id=task_id, map_index=index)
        label = task_id if index is None or index < 0 else f"{task_id} [{index}]"
        gallery = request.url_for("run_gallery", dag_id=dag_id, run_id=run_id).path
        return _page(
            request,
            dag_id=dag_id,
            run_id=run_id,
            items=items,
            title=f"Images of {label}",
            subtitle=f"{dag_id} · {run_id}",
            other_href=gallery,
            other_label="all images of this run",
            empty="This task instance recorded no CometFlux images.",
            show_task=len(items) > 1,
        )

    @router.get("/run/{dag_id}/{run_id}", name="run_gallery", response_class=HTMLResponse)
    def run_gallery_page(
        request: Request,
        dag_id: DagId,
        run_id: RunId,
        source: Source,
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
        status: Annotated[str, Query(max_length=40)] = "",
        verdict: Annotated[str, Query(max_length=40)] = "",
        task: Annotated[str, Query(max_length=250)] = "",
    ) -> HTMLResponse:
        """The gallery of a DAG run: every task instance, map index and prompt, in order, a page at a time."""
        _no_wildcard(dag_id)
        items = source(dag_id, run_id)
        share_verdicts(items)
        every = [(item, card) for item in items for card in item.cards]
        count = sum(len(card.pictures) for _, card in every)
        chosen = [
            (item, card)
            for item, card in every
            if (not status or card.status == status)
            and (not task or item.task_id == task)
            and (not verdict or any(p.verdict == verdict for p in card.pictures))
        ]
        pages = max(1, -(-len(chosen) // PAGE_SIZE))
        number = min(page, pages)
        here = request.url_for("run_gallery", dag_id=dag_id, run_id=run_id)
        query = {k: v for k, v in {"status": status, "verdict": verdict, "task": task}.items() if v}

        def page_href(n: int) -> str:
            url = here.include_query_params(**query, page=n)
            return f"{url.path}?{url.query}"

        kept = any(p.verdict == KEPT for _, card in every for p in card.pictures)
        total = run_cost(items)
        spent = "" if total is None else f" · ${total:.4f} in total"
        return _page(
            request,
            dag_id=dag_id,
            run_id=run_id,
            items=items,
            shown=chosen[(number - 1) * PAGE_SIZE : number * PAGE_SIZE],
            title=f"Image gallery of {dag_id}",
            subtitle=f"{run_id} · {count} image{'s' if count != 1 else ''}{spent}"
            + (f" · {len(chosen)} shown by the filters" if query else ""),
            other_href="",
            other_label="",
            empty="No task of this run recorded CometFlux images." if not every else "No image matches these filters.",
            show_task=True,
            filters={
                "statuses": sorted({card.status for _, card in every if card.status}),
                "verdicts": VERDICTS,
                "tasks": sorted({item.task_id for item in items}),
                "status": status,
                "verdict": verdict,
                "task": task,
                "zip_href": request.url_for("kept_zip", dag_id=dag_id, run_id=run_id).path if kept else "",
            },
            pages={
                "number": number,
                "count": pages,
                "previous": page_href(number - 1) if number > 1 else "",
                "next": page_href(number + 1) if number < pages else "",
            }
            if pages > 1
            else None,
        )

    @router.get("/image/{dag_id}/{run_id}/{task_id}/{map_index}/{index}", name="image")
    def image(
        dag_id: DagId,
        run_id: RunId,
        task_id: TaskId,
        map_index: Annotated[int, Path(ge=-1)],
        index: Annotated[int, Path(ge=0)],
        source: Source,
    ) -> StreamingResponse:
        """The bytes of one stored image, streamed from where the task stored it."""
        found = _stored_image(source, dag_id, run_id, task_id, map_index, index)
        return _stream(found)

    @router.get("/thumb/{dag_id}/{run_id}/{task_id}/{map_index}/{index}", name="thumb")
    def thumb(
        request: Request,
        dag_id: DagId,
        run_id: RunId,
        task_id: TaskId,
        map_index: Annotated[int, Path(ge=-1)],
        index: Annotated[int, Path(ge=0)],
        source: Source,
    ) -> Response:
        """The thumbnail of one stored image (made once, then from the cache); the image itself without Pillow."""
        from airflow_provider_cometflux.plugins.thumbnails import CONTENT_TYPE, thumbnail

        found = _stored_image(source, dag_id, run_id, task_id, map_index, index)
        etag = f'"{found.picture.sha256 or found.picture.uri}-{found.size}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={**IMAGE_HEADERS, "ETag": etag})
        try:
            data = thumbnail(found.path, uri=found.picture.uri, sha256=found.picture.sha256, size=found.size)
        except Exception as exc:
            log.warning("Cannot make the thumbnail of %s: %s", found.where, exc)
            raise HTTPException(404, "The stored image cannot be read as an image.") from None
        if data is None:
            return _stream(found)
        return Response(data, media_type=CONTENT_TYPE, headers={**IMAGE_HEADERS, "ETag": etag})

    @router.get("/kept/{dag_id}/{run_id}.zip", name="kept_zip")
    def kept_zip(dag_id: DagId, run_id: RunId, source: Source) -> StreamingResponse:
        """The run's kept images (reviewed and kept), as one zip streamed while it is read from storage."""
        _no_wildcard(dag_id)
        items = source(dag_id, run_id)
        share_verdicts(items)
        kept: list[_Found] = []
        seen: set[str] = set()
        for item in items:
            for card in item.cards:
                for picture in card.pictures:
                    if picture.verdict != KEPT or picture.kind != "stored" or picture.uri in seen:
                        continue
                    where = f"{dag_id}/{run_id}/{item.task_id}[{item.map_index}] #{picture.index}"
                    try:
                        path, content_type = stored_image_path(card, picture)
                    except LookupError:
                        continue
                    seen.add(picture.uri)
                    kept.append(_Found(card, picture, path, content_type, picture.size or 0, where))
        if not kept:
            raise HTTPException(404, "No image of this run was kept by a review.")
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{dag_id}-{run_id}-kept")[:120]
        headers = {**IMAGE_HEADERS, "Content-Disposition": f'attachment; filename="{name}.zip"'}
        headers.pop("Content-Security-Policy")
        return StreamingResponse(_zip_chunks(kept), media_type="application/zip", headers=headers)

    app = FastAPI(title="CometFlux images", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    return app
