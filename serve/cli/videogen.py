"""`videogen`: the command-line client of a videogen server (the console script in pyproject).

    videogen generate "a red fox running through snow" -o fox.mp4 [--height 256 --width 384 ...]
    videogen lipsync --video face.mp4 --audio speech.wav -o out.mp4
    videogen status|log|cancel JOB_ID
    videogen upload FILE

Jobs are submitted to the job API and followed on their event stream (a progress bar on stderr);
local files are uploaded first (POST /uploads). The server and key come from --url / --key or
VIDEOGEN_URL / VIDEOGEN_API_KEY. Errors are one line, `videogen: <code>: <message>`.

Exit codes: 0 done; 1 the job failed or was canceled; 2 usage (bad arguments); 3 the server refused
the request (4xx: key, field, size); 4 the server could not be reached or failed (5xx); 130
interrupted (a submitted job goes on: `videogen status ID`).

It imports only httpx, httpx-sse and tqdm, so it starts fast and runs where the server's
dependencies are not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

import httpx

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_SERVER, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_URL = "http://127.0.0.1:8080"
SIZES = {"quick": (256, 384, 25, 10), "small": (480, 704, 97, 30), "full": (704, 1216, 121, 50)}


class Failure(Exception):
    """One line for stderr, and the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _failure(response: httpx.Response) -> Failure:
    try:
        body = response.json()
        message = f"{body['error']}: {body['message']}"
        if body.get("fields"):
            message += " (" + ", ".join(f["field"] for f in body["fields"]) + ")"
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}"
    return Failure(EXIT_REFUSED if response.status_code < 500 else EXIT_SERVER, message)


class Client:
    def __init__(self, url: str, key: str, timeout: float = 60) -> None:
        self.base = url.rstrip("/")
        self.http = httpx.Client(base_url=self.base, headers={"X-API-Key": key}, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Failure(EXIT_SERVER, f"unreachable: {self.base} ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise _failure(response)
        return response

    def upload(self, path: Path) -> str:
        """A local file's upload:// reference; a URL as it is."""
        if urlparse(str(path)).scheme in ("gs", "https", "http", "upload"):
            return str(path)
        if not path.is_file():
            raise Failure(EXIT_USAGE, f"no such file: {path}")
        with path.open("rb") as handle:
            answer = self.call("POST", "/uploads", files={"file": (path.name, handle)}, timeout=600).json()
        return str(answer["url"])

    def follow(self, job_id: str, quiet: bool) -> dict[str, Any]:
        """Follow the job's events until it ends (reconnecting with Last-Event-ID); its last state."""
        from httpx_sse import connect_sse
        from tqdm import tqdm

        bar = None if quiet else tqdm(total=1, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True)
        last: str | None = None
        try:
            for _attempt in range(30):
                headers = {"Last-Event-ID": last} if last else {}
                try:
                    with connect_sse(
                        self.http, "GET", f"/jobs/{job_id}/events", headers=headers, timeout=None
                    ) as source:
                        if source.response.status_code >= 400:
                            source.response.read()
                            raise _failure(source.response)
                        for event in source.iter_sse():
                            last = event.id or last
                            data = json.loads(event.data)
                            if bar is not None:
                                _draw(bar, event.event, data)
                            if event.event in ("result", "error"):
                                return {"event": event.event, **data}
                except httpx.TransportError:
                    continue  # dropped (a load balancer's timeout): reconnect where it left off
            raise Failure(EXIT_SERVER, f"lost the event stream of job {job_id}; videogen status {job_id}")
        finally:
            if bar is not None:
                bar.close()

    def download(self, url: str, target: Path) -> None:
        own = urlparse(url).netloc == urlparse(self.base).netloc
        try:
            with (self.http if own else httpx.Client(timeout=60)).stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _failure(response)
                with target.open("wb") as out:
                    for block in response.iter_bytes():
                        out.write(block)
        except httpx.TransportError as exc:
            raise Failure(EXIT_SERVER, f"could not download {url} ({type(exc).__name__})") from None


def _draw(bar: Any, kind: str, data: dict[str, Any]) -> None:
    if kind == "status":
        bar.set_description(data["status"])
    elif kind == "progress":
        bar.total = max(int(data["total"]), 1)
        bar.n = int(data["step"])
        bar.refresh()
    elif kind == "result":
        bar.set_description("succeeded")
        bar.n = bar.total
        bar.refresh()
    elif kind == "error":
        bar.set_description(data["code"])


def _finish(client: Client, job: dict[str, Any], output: Path | None, quiet: bool) -> int:
    job_id = job["job_id"]
    ended = client.follow(job_id, quiet)
    if ended["event"] == "error":
        raise Failure(EXIT_JOB_FAILED, f"{ended['code']}: {ended['message']} (job {job_id})")
    url = ended["result"]["video_url"]
    target = output or Path(f"{job_id}.mp4")
    client.download(url, target)
    print(target)
    return EXIT_OK


def _submit(client: Client, body: dict[str, Any], args: argparse.Namespace) -> int:
    job = client.call("POST", "/jobs", json=body).json()
    if not args.quiet:
        print(f"job {job['job_id']}", file=sys.stderr)
    if args.no_wait:
        print(job["job_id"])
        return EXIT_OK
    try:
        return _finish(client, job, args.output, args.quiet)
    except KeyboardInterrupt:
        print(f"\nvideogen: interrupted; the job goes on: videogen status {job['job_id']}", file=sys.stderr)
        return EXIT_INTERRUPTED


def generate(client: Client, args: argparse.Namespace) -> int:
    height, width, frames, steps = SIZES[args.size]
    body: dict[str, Any] = {
        "prompt": args.prompt,
        "height": args.height or height,
        "width": args.width or width,
        "num_frames": args.frames or frames,
        "num_inference_steps": args.steps or steps,
    }
    for name, value in (("negative_prompt", args.negative), ("seed", args.seed), ("fps", args.fps)):
        if value is not None:
            body[name] = value
    if args.image is not None:
        body["image"] = client.upload(args.image)
    return _submit(client, body, args)


def lipsync(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"video_in": client.upload(args.video), "audio_in": client.upload(args.audio)}
    for name, value in (("inference_steps", args.steps), ("guidance_scale", args.guidance), ("seed", args.seed)):
        if value is not None:
            body[name] = value
    return _submit(client, body, args)


def show(client: Client, args: argparse.Namespace) -> int:
    paths = {"status": f"/jobs/{args.job_id}", "log": f"/jobs/{args.job_id}/log"}
    if args.command == "cancel":
        answer = client.call("POST", f"/jobs/{args.job_id}/cancel").json()
    else:
        answer = client.call("GET", paths[args.command]).json()
    if args.command == "log":
        for line in answer["lines"]:
            print(f"{line['time']}  {line['message']}")
    else:
        print(json.dumps(answer, indent=2))
    return EXIT_OK


def upload(client: Client, args: argparse.Namespace) -> int:
    print(client.upload(args.file))
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="videogen",
        description="Generate videos with a videogen server: text-to-video, lip-sync, and its jobs.",
        epilog="Exit codes: 0 done, 1 job failed or canceled, 2 usage, 3 refused by the server (4xx), "
        "4 unreachable or server error (5xx), 130 interrupted.",
    )
    top.add_argument("--url", default=os.environ.get("VIDEOGEN_URL", DEFAULT_URL), help="server (VIDEOGEN_URL)")
    top.add_argument("--key", default=os.environ.get("VIDEOGEN_API_KEY"), help="API key (VIDEOGEN_API_KEY)")
    commands = top.add_subparsers(dest="command", required=True)

    def job_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-o", "--output", type=Path, help="where the MP4 goes (default: <job id>.mp4)")
        sub.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    gen = commands.add_parser("generate", help="text-to-video (image-to-video with --image)")
    gen.add_argument("prompt")
    gen.add_argument("--size", choices=SIZES, default="quick", help="preset: quick (default), small, full")
    gen.add_argument("--height", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument("--frames", type=int, help="8k+1")
    gen.add_argument("--steps", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--fps", type=int)
    gen.add_argument("--negative", help="negative prompt")
    gen.add_argument("--image", type=Path, help="first frame: a local file (uploaded) or a URL")
    job_options(gen)
    gen.set_defaults(run=generate)

    sync = commands.add_parser("lipsync", help="lip-sync a face video to speech")
    sync.add_argument("--video", type=Path, required=True, help="face video: a local file (uploaded) or a URL")
    sync.add_argument("--audio", type=Path, required=True, help="speech: a local file (uploaded) or a URL")
    sync.add_argument("--steps", type=int)
    sync.add_argument("--guidance", type=float)
    sync.add_argument("--seed", type=int)
    job_options(sync)
    sync.set_defaults(run=lipsync)

    for name, text in (("status", "a job's state"), ("log", "a job's log"), ("cancel", "cancel a job")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("job_id")
        sub.set_defaults(run=show)
    up = commands.add_parser("upload", help="upload a file; prints its upload:// reference")
    up.add_argument("file", type=Path)
    up.set_defaults(run=upload)
    return top


def fail(message: str, code: int) -> NoReturn:
    print(f"videogen: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.key:
        fail("no API key: --key or VIDEOGEN_API_KEY", EXIT_USAGE)
    client = Client(args.url, args.key)
    try:
        return int(args.run(client, args))
    except Failure as failure:
        fail(str(failure), failure.code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
