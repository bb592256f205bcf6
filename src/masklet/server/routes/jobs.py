"""Propagation as a job: start it, poll its progress, cancel it."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Depends

from ..deps import Context, Ctx, require_key
from ..errors import ApiError, to_api_error
from ..schemas import JobStatus, PropagateRequest
from ..video_ops import Job, propagate

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
_MAX_JOBS = 500


def _status(job: Job) -> JobStatus:
    return JobStatus(
        job_id=job.job_id,
        session_id=job.session_id,
        status=job.status,  # type: ignore[arg-type]  # Job.status is a str holding one of JobStatus's literals
        done=job.progress.done,
        total=job.progress.total,
        error=job.error,
    )


@router.post("/videos/{sid}/jobs", status_code=202)
async def start_job(sid: str, body: PropagateRequest, ctx: Ctx) -> JobStatus:
    """Propagate in the background; results land in the session (GET /v1/videos/{sid}/results)."""
    session = ctx.sessions.get(sid)
    loaded = ctx.pool.get(session.model)
    finished = [j for j, job in ctx.jobs.items() if job.status != "running"]
    for jid in finished[: max(0, len(ctx.jobs) - _MAX_JOBS + 1)]:
        del ctx.jobs[jid]
    job = Job(uuid.uuid4().hex, sid)

    async def run() -> None:
        try:
            async with session.busy:
                async for _ in propagate(ctx.pool, loaded, session, body, job.progress):
                    pass
            job.status = "completed"
        except asyncio.CancelledError:
            job.status = "canceled"
        except Exception as err:  # noqa: BLE001 (reported in the job's status)
            api = to_api_error(err)
            job.status = "failed"
            job.error = {
                "code": api.code if api else "internal_error",
                "message": api.message if api else "internal error",
            }

    job.task = asyncio.create_task(run())
    ctx.jobs[job.job_id] = job
    return _status(job)


def _job(ctx: Context, jid: str) -> Job:
    if jid not in ctx.jobs:
        raise ApiError(404, "unknown_job", f"job {jid!r} is unknown or expired")
    return ctx.jobs[jid]


@router.get("/jobs/{jid}")
async def job_status(jid: str, ctx: Ctx) -> JobStatus:
    return _status(_job(ctx, jid))


@router.delete("/jobs/{jid}")
async def cancel_job(jid: str, ctx: Ctx) -> JobStatus:
    """Cancel a running job (it stops after the frame in progress)."""
    job = _job(ctx, jid)
    job.cancel()
    if job.task is not None:
        await asyncio.wait([job.task], timeout=30)
    return _status(job)
