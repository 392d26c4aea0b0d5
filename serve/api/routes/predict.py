"""POST /predict: the served task's body in, the stored video's description out."""

# No `from __future__ import annotations` here: the endpoint's body type is the task spec's,
# chosen at run time, and FastAPI reads the annotation as the object it is.

from typing import Annotated

from fastapi import APIRouter, Body, Request

from serve.api.deps import Caller, DispatchDep, SettingsDep, absolute, request_id_of
from serve.api.openapi import GENERATION_ERRORS, responses
from serve.core.tasks import TaskSpec
from serve.schemas import PredictResponse


def predict_router(spec: TaskSpec) -> APIRouter:
    """POST /predict for `spec`'s body (text-to-video or lip-sync)."""
    router = APIRouter(tags=["predict"])
    body_type = spec.predict_body

    @router.post(
        "/predict",
        response_model=PredictResponse,
        responses=responses(*_codes(spec)),
        summary=f"Generate a video ({spec.name}) and wait for it",
    )
    async def predict(
        body: Annotated[body_type, Body()],  # type: ignore[valid-type]
        request: Request,
        caller: Caller,
        dispatch: DispatchDep,
        settings: SettingsDep,
    ) -> PredictResponse:
        """Generate a video and wait for it (minutes on a GPU for the default size). Lip-sync:
        `video_in` and `audio_in` are fetched (gs:// or https://), the video follows the speech's
        length and the speech is muxed in. With PREDICT_VIA_QUEUE the work goes through the job queue."""
        prediction = await dispatch.predict(
            body,
            request_id=request_id_of(request),
            tenant=caller.tenant,
            is_disconnected=request.is_disconnected,
        )
        response = prediction.response
        request.state.timings, request.state.video_path = response.metadata.timings, response.video_path
        return response.model_copy(update={"video_url": absolute(response.video_url, request, settings)})

    return router


def _codes(spec: TaskSpec) -> tuple[str, ...]:
    return (*GENERATION_ERRORS, *spec.input_errors)
