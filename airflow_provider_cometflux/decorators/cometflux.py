"""
``@task.cometflux``: a TaskFlow function returns the prompt (or the whole model input) and
:class:`~airflow_provider_cometflux.operators.flux.CometFluxPredictionOperator` makes the images.

The function runs in the worker, at the start of the task; what it returns is checked before any request, then
the operator creates the prediction and waits inline or defers, exactly as it does on its own, and the task returns
what the operator returns (``list[str]``).
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Asset
from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory

from airflow_provider_cometflux._compat import determine_kwargs
from airflow_provider_cometflux.exceptions import CometFluxInputError
from airflow_provider_cometflux.models import public_input
from airflow_provider_cometflux.operators.flux import CometFluxPredictionOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The XCom holding the model input the function returned (merged with the decorator's ``input``), so that a task
#: resumed after deferral records the input its prediction was made from.
XCOM_MODEL_INPUT = "model_input"
#: What the decorated function may return, as error messages say it.
ALLOWED_RETURNS = "a prompt (a non-empty str) or a model input (a dict with a 'prompt' key)"

_short = reprlib.Repr()
_short.maxstring = 120
_short.maxother = 120


def model_input_from(returned: object, defaults: Mapping[str, Any] | None, *, function: str) -> dict[str, Any]:
    """
    The model input of a prediction, from what the decorated function returned.

    :param returned: the function's return value: a prompt (``str``) or a model input (``dict`` with ``prompt``).
    :param defaults: the decorator's ``input``, under what the function returned (a returned key wins).
    :param function: the function's name, for the error message.
    :raises CometFluxInputError: when ``returned`` is neither, naming the value, its type and what is allowed.
    """
    if defaults is not None and not isinstance(defaults, Mapping):
        raise CometFluxInputError(f"input: {defaults!r} is not allowed; expected a mapping of model inputs.")
    merged = dict(defaults or {})
    if isinstance(returned, str) and returned.strip():
        merged["prompt"] = returned
        return merged
    if isinstance(returned, Mapping) and "prompt" in returned:
        merged.update(returned)
        return merged
    if isinstance(returned, Mapping):
        what = f"a {type(returned).__name__} without 'prompt' (keys: {_short.repr(sorted(map(str, returned)))})"
    else:
        what = f"{_short.repr(returned)} ({type(returned).__name__})"
    raise CometFluxInputError(f"@task.cometflux function {function!r} returned {what}; expected {ALLOWED_RETURNS}.")


class CometFluxDecoratedOperator(DecoratedOperator, CometFluxPredictionOperator):
    """
    Runs the decorated function, then generates images from what it returned, as
    :class:`~airflow_provider_cometflux.operators.flux.CometFluxPredictionOperator` does.

    The returned prompt is used as it is (it is not rendered as a Jinja template); the decorator's templated
    arguments (``input``, ``model``, ``output_path``) are rendered as the operator's are.

    :param python_callable: the decorated function; it returns a prompt (``str``) or a model input (``dict``
        with ``prompt``), which is merged over ``input``.
    :param op_args: positional arguments of the function (templated).
    :param op_kwargs: keyword arguments of the function (templated).
    :param kwargs: the operator's arguments except ``prompt`` (``input``, ``model``, ``output_path``,
        ``deferrable``, ``timeout``, ...) and every ``BaseOperator`` argument.
    """

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *CometFluxPredictionOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **CometFluxPredictionOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.cometflux"
    #: The rendered-fields view then shows the prompt and input the function returned.
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("prompt") is not None:
            raise CometFluxInputError(
                f"prompt: {kwargs['prompt']!r} is not allowed in @task.cometflux(...); the function returns the prompt."
            )
        kwargs.pop("prompt", None)
        kwargs["multiple_outputs"] = False  # the task returns a list of images; a `-> dict` hint must not unroll it
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)
        self._returned_input: dict[str, Any] | None = None

    def execute(self, context: Context) -> list[str]:
        arguments = determine_kwargs(self.python_callable, self.op_args, {**context, **self.op_kwargs})
        returned = self.python_callable(*self.op_args, **arguments)
        name = getattr(self.python_callable, "__name__", self.task_id)
        model_input = model_input_from(returned, self.input, function=name)
        self.prompt, self.input = None, model_input
        self._returned_input = model_input
        context["ti"].xcom_push(key=XCOM_MODEL_INPUT, value=_recordable(model_input))
        # Not DecoratedOperator.execute: Airflow 3.0's reads self.xcom_push, which only the core BaseOperator has
        # (AttributeError on this Task SDK operator). Its other work, function arguments that are assets becoming
        # inlets, is done here.
        self.inlets.extend(arg for arg in chain(self.op_args, self.op_kwargs.values()) if isinstance(arg, Asset))
        return CometFluxPredictionOperator.execute(self, context)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, sent_input: dict[str, Any] | None = None
    ) -> list[str]:
        """
        Finish after the wait, as the operator does. A task resumed after deferral did not run the function
        again: it reads the model input back from XCom ``model_input``, to record what the prediction was made
        from.

        :param context: the task's context.
        :param event: a prediction event from the trigger or the inline wait.
        :param sent_input: the input as sent, after an inline wait (the key of ``reuse_path``'s index).
        """
        if self._returned_input is None:
            ti = context["ti"]
            saved = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_MODEL_INPUT, map_indexes=ti.map_index)
            if isinstance(saved, Mapping):
                self.prompt, self.input = None, dict(saved)
        return super().execute_complete(context, event, sent_input)


def _recordable(model_input: Mapping[str, Any]) -> dict[str, Any]:
    """The input made JSON-safe (paths as strings) and small (inline images as their size and digest)."""
    return public_input(json.loads(json.dumps(dict(model_input), default=str)))


def cometflux_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """
    ``@task.cometflux``: the function returns a prompt (``str``) or a model input (``dict`` with ``prompt``) and
    the task generates images from it, returning what
    :class:`~airflow_provider_cometflux.operators.flux.CometFluxPredictionOperator` returns (``list[str]``).

    Usage::

        @task.cometflux(model="black-forest-labs/flux-schnell", output_path="s3://bucket/flux", deferrable=True)
        def draw(row: dict) -> str:
            return f"a poster for {row['city']}, flat colours"

        draw.expand(row=rows)

    :param python_callable: the function to decorate.
    :param kwargs: the operator's arguments except ``prompt`` (``input`` holds defaults the function's return
        value is merged over) and every ``BaseOperator`` argument. ``multiple_outputs`` is not supported.
    """
    if kwargs.pop("multiple_outputs", None):
        raise CometFluxInputError(
            "multiple_outputs: True is not allowed in @task.cometflux(...); the task returns one list of images."
        )
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=False,
        decorated_operator_class=CometFluxDecoratedOperator,
        **kwargs,
    )
