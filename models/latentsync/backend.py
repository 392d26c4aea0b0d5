"""`latentsync` (and `latentsync-tiny`): lip-sync served warm, in-process.

Weight cache layout (MODEL_PATH; the startup script pulls it from Cloud Storage):

    latentsync_unet.pt            the official UNet checkpoint ({"state_dict": ...}), loaded strictly
    whisper/tiny.pt               the official Whisper tiny checkpoint ({"dims", "model_state_dict"})
    sd-vae-ft-mse/                a diffusers AutoencoderKL directory (config.json + weights)
    unet_config.json (optional)   UNet kwargs overriding upstream's stage2 `model:` section

One request: decode the speech (16 kHz) -> Whisper features -> one 50x384 chunk per output frame
at 25 fps; decode the clip to 25 fps into a disk-backed array; find the face in every frame
(MediaPipe), keeping the last good one where detection fails; then per 16-frame chunk: align the
faces, VAE-encode the masked and reference faces, denoise (DDIM, guidance, DeepCache), decode,
keep the unmasked pixels of the reference, paste back into the frames and stream them to the
encoder. The clip is played forwards then backwards as often as the speech needs (upstream's
rule); the output has one frame per whisper chunk, as upstream: two frames (80 ms) past the speech.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.base import BackendOptions, InputError, LipSyncRequest, StepCallback, Video
from models.device import resolve_device, resolve_dtype
from models.latentsync.audio import audio_features, feature_chunks, load_whisper
from models.latentsync.checkpoint import strict_load
from models.latentsync.denoise import denoise, guided_audio, make_scheduler
from models.latentsync.face import FaceAligner, paste_back, resize_face_to_box
from models.latentsync.media import FPS, SAMPLE_RATE, read_audio, read_video
from models.latentsync.options import LipSyncOptions
from models.latentsync.unet import DeepCache, LatentSyncUNet, UNetConfig
from models.mp4 import Mp4Writer

log = logging.getLogger("models.latentsync")

CHUNK_FRAMES = 16
VAE_SCALING = 0.18215  # upstream sets scaling_factor 0.18215, shift_factor 0 on sd-vae-ft-mse
UNET_FILE = "latentsync_unet.pt"
WHISPER_FILE = "whisper/tiny.pt"
VAE_DIR = "sd-vae-ft-mse"
UNET_CONFIG_FILE = "unet_config.json"
# Upstream's latentsync/utils/mask.png (the same file in 1.0, 1.5 and 1.6; Apache-2.0): the region
# the model was trained to regenerate. A file of the weight cache, loaded as upstream loads it.
MASK_FILE = "mask.png"
VARIANT_RESOLUTION = {"1.5": 256, "1.6": 512}


def load_fixed_mask(path: Path, resolution: int) -> torch.Tensor:
    """Upstream's mask at `resolution`, exactly as its `load_fixed_mask` makes it: the PNG read with
    OpenCV as RGB, resized with Lanczos-4, divided by 255, channels first. (3, r, r); 1 keeps the
    reference pixel, 0 is regenerated."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path} is not a readable image (expected upstream LatentSync's mask.png)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    resized = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4) / 255.0
    return torch.from_numpy(resized).permute(2, 0, 1).contiguous().float()


def lower_face_mask(resolution: int) -> torch.Tensor:
    """(3, r, r) float mask: 1 keeps the reference pixel, 0 is regenerated. Our own drawing of the
    region LatentSync inpaints (both cheeks and the mouth and chin below the nose, the nose kept),
    used only by `latentsync-tiny`, which has no upstream mask: the real model loads MASK_FILE."""
    r = resolution
    ys, xs = np.mgrid[0:r, 0:r] / r
    cheeks = (ys >= 0.37) & (ys < 0.5) & (((xs >= 0.04) & (xs < 0.31)) | ((xs >= 0.72) & (xs < 0.96)))
    mouth = (ys >= 0.5) & (ys < 0.7) & (xs >= 0.04) & (xs < 0.96)
    jaw_half_width = 0.46 - (ys - 0.7) * 1.35
    jaw = (ys >= 0.7) & (ys < 0.95) & (np.abs(xs - 0.5) < jaw_half_width)
    keep = ~(cheeks | mouth | jaw)
    return torch.from_numpy(np.repeat(keep[None].astype(np.float32), 3, axis=0))


def ping_pong(source_frames: int, output_frames: int) -> list[int]:
    """Source frame of every output frame: forwards, backwards, forwards... (upstream's loop)."""
    if output_frames <= source_frames:
        return list(range(output_frames))
    order: list[int] = []
    forward = list(range(source_frames))
    for loop in range(math.ceil(output_frames / source_frames)):
        order += forward if loop % 2 == 0 else forward[::-1]
    return order[:output_frames]


class LatentSyncBackend:
    name = "latentsync"
    task = "lip-sync"

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self.lipsync: LipSyncOptions = getattr(options, "lipsync", None) or LipSyncOptions()
        if self.lipsync.variant not in VARIANT_RESOLUTION:
            raise ValueError(f"unknown LatentSync variant {self.lipsync.variant!r}; expected 1.5 or 1.6")
        self.resolution = VARIANT_RESOLUTION[self.lipsync.variant]
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.model_loads = 0  # every model built; a second request must not add to it
        self._landmarker: Any = None

    # -- loading -------------------------------------------------------------------------
    def weights_dir(self) -> Path:
        if not self.options.model_path:
            raise ValueError("MODEL=latentsync needs MODEL_PATH: a directory holding the checkpoints (see README)")
        return Path(self.options.model_path)

    def load(self) -> None:
        from diffusers import AutoencoderKL

        root = self.weights_dir()
        for name in (UNET_FILE, WHISPER_FILE, f"{VAE_DIR}/config.json"):
            if not (root / name).is_file():
                raise FileNotFoundError(f"{root / name} is missing (see the README's LatentSync weight layout)")
        self.device = resolve_device(self.options.device)
        self.dtype = (
            torch.float16
            if self.options.dtype == "auto" and self.device.type == "cuda"
            else (resolve_dtype(self.options.dtype, self.device))
        )
        config = UNetConfig()
        if (root / UNET_CONFIG_FILE).is_file():
            config = UNetConfig.from_dict(json.loads((root / UNET_CONFIG_FILE).read_text()))
        ckpt = torch.load(root / UNET_FILE, map_location="cpu", weights_only=True)
        state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
        if state is None:
            raise ValueError(f"{root / UNET_FILE} has no 'state_dict' entry: not a LatentSync UNet checkpoint")
        with torch.device("meta"):
            unet = LatentSyncUNet(config)
        unet.to_empty(device="cpu")
        state = dict(state)
        if added := unet.complete_derived_buffers(state):
            log.info(
                "UNet checkpoint has no positional-encoding buffers; using the fixed sinusoids",
                extra={"buffers": len(added)},
            )
        strict_load(unet, state, str(root / UNET_FILE))
        del ckpt, state
        self.unet = unet.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.whisper = load_whisper(root / WHISPER_FILE, self.device)
        if self.whisper.dims.n_audio_state != config.cross_attention_dim:
            raise ValueError(
                f"whisper width {self.whisper.dims.n_audio_state} != "
                f"UNet cross_attention_dim {config.cross_attention_dim}"
            )
        vae = AutoencoderKL.from_pretrained(root / VAE_DIR, local_files_only=True)
        self.vae = vae.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if self.resolution % (self.vae_factor * 8):
            raise ValueError(f"resolution {self.resolution} is not a multiple of {self.vae_factor * 8}")
        self.mask = self._mask(root).to(self.device, self.dtype)
        self._landmarker = self._make_landmarker()
        self.model_loads += 4

    def _mask(self, root: Path) -> torch.Tensor:
        path = root / MASK_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the weight cache holds upstream LatentSync's latentsync/utils/mask.png "
                f"(Apache-2.0; the region the model was trained to regenerate). Copy it into the checkpoint "
                f"directory and push it again (python -m serve.cli.weights push ...; README: weight cache layout)"
            )
        return load_fixed_mask(path, self.resolution)

    def _make_landmarker(self) -> Any:
        from models.latentsync.landmarks import FaceLandmarker

        return FaceLandmarker()

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "variant": self.lipsync.variant,
            "resolution": self.resolution,
            "source": self.options.model_path or "built-in",
            "revision": self.options.revision or "unversioned",
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "deepcache": self.lipsync.deepcache,
            "model_loads": self.model_loads,
        }

    # -- one request -----------------------------------------------------------------------
    def generate(self, request: LipSyncRequest, on_step: StepCallback, *, output: Path) -> Video:
        if request.warmup:
            return self._warmup(on_step, output)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        samples = read_audio(request.audio_path, self.lipsync.limits)
        # One frame per whisper chunk, as upstream: its chunk loop runs two frames past the end of the
        # speech (52 frames for 2.0 s), and every frame's chunk sees the clamped features there.
        chunks = feature_chunks(audio_features(self.whisper, samples), FPS)
        timings["audio_features"] = time.perf_counter() - started
        with read_video(request.video_path, self.lipsync.limits) as frames:
            timings["decode_video"] = time.perf_counter() - started - timings["audio_features"]
            mark = time.perf_counter()
            aligner = FaceAligner(self.resolution)
            # Matrices in frame order: the alignment smooths its nose bias from frame to frame.
            matrices = [aligner.matrix(p) for p in self._track_faces(frames[: min(len(frames), len(chunks))])]
            timings["face_detection"] = time.perf_counter() - mark
            order = ping_pong(len(matrices), len(chunks))
            height, width = frames.shape[1], frames.shape[2]
            with Mp4Writer(
                output, width=width, height=height, fps=FPS, options=self.options.video, audio_rate=SAMPLE_RATE
            ) as writer:
                self._synthesise(request, frames, matrices, order, chunks, aligner, writer, on_step, timings)
                mark = time.perf_counter()
                size = writer.close(samples[: int(len(chunks) / FPS * SAMPLE_RATE)])
                timings["mux"] = time.perf_counter() - mark
        return Video(
            path=output,
            fps=FPS,
            frames=writer.frames,
            width=width - width % 2,
            height=height - height % 2,
            bytes=size,
            timings=timings,
        )

    def _track_faces(self, frames: np.ndarray) -> list[np.ndarray]:
        """Three face points per frame. A frame without a face reuses the last good one (the first
        good one for frames before it), for at most `face_reuse_frames` frames in a row after a
        face was seen; none in the first `face_grace_frames` frames, or a longer gap:
        no_face_detected, naming the frames."""
        points: list[np.ndarray | None] = []
        grace, reuse = self.lipsync.face_grace_frames, self.lipsync.face_reuse_frames
        missing_since: int | None = None
        for index in range(len(frames)):
            found = self._landmarker.points(np.asarray(frames[index]))
            seen = any(p is not None for p in points)
            if found is None and seen:
                missing_since = index if missing_since is None else missing_since
                if index - missing_since + 1 > reuse:
                    self._lost(missing_since, len(frames), frames, reuse)
            elif found is not None:
                missing_since = None
            points.append(found if found is not None else (points[-1] if points else None))
            if index + 1 == min(grace, len(frames)) and all(p is None for p in points):
                raise InputError("no_face_detected", f"no face found in the first {index + 1} frames of video_in")
        first = next(p for p in points if p is not None)
        return [p if p is not None else first for p in points]

    def _lost(self, start: int, count: int, frames: np.ndarray, reuse: int) -> None:
        """The face is gone from frame `start` on for more than `reuse` frames: name the whole gap."""
        end = start
        while end + 1 < count and self._landmarker.points(np.asarray(frames[end + 1])) is None:
            end += 1
        raise InputError(
            "no_face_detected",
            f"no face in frames {start} to {end} of video_in: more than {reuse} frames in a row without one "
            f"(LATENTSYNC_FACE_REUSE_FRAMES)",
        )

    @torch.no_grad()
    def _synthesise(
        self,
        request: LipSyncRequest,
        frames: np.ndarray,
        matrices: list[np.ndarray],
        order: list[int],
        chunks: torch.Tensor,
        aligner: FaceAligner,
        writer: Mp4Writer,
        on_step: StepCallback,
        timings: dict[str, float],
    ) -> None:
        import cv2

        r, dev, dtype = self.resolution, self.device, self.dtype
        latent = r // self.vae_factor
        scheduler = make_scheduler()
        scheduler.set_timesteps(request.num_inference_steps, device=dev)
        generator = torch.Generator(device=dev).manual_seed(request.seed)
        # One noise frame for the whole video, as upstream: temporally consistent starts.
        noise = torch.randn((1, 4, 1, latent, latent), generator=generator, device=dev, dtype=dtype)
        count = math.ceil(len(order) / CHUNK_FRAMES)
        total = count * request.num_inference_steps
        cache = DeepCache(self.lipsync.deepcache_interval) if self.lipsync.deepcache else None
        box = aligner.face_size[1], aligner.face_size[0]
        for key in ("align", "vae_encode", "denoise", "vae_decode", "paste_back"):
            timings.setdefault(key, 0.0)
        for c in range(count):
            sources = order[c * CHUNK_FRAMES : (c + 1) * CHUNK_FRAMES]
            mark = time.perf_counter()
            faces = np.stack(
                [
                    cv2.resize(
                        aligner.crop(np.asarray(frames[s]), matrices[s], dev), (r, r), interpolation=cv2.INTER_LANCZOS4
                    )
                    for s in sources
                ]
            )
            pixels = torch.from_numpy(faces).permute(0, 3, 1, 2).to(dev, dtype) / 127.5 - 1.0
            timings["align"] += time.perf_counter() - mark
            mark = time.perf_counter()
            masked = self._encode(pixels * self.mask, generator)
            reference = self._encode(pixels, generator)
            mask = F.interpolate(self.mask[None, :1].expand(len(sources), 1, r, r), size=(latent, latent))
            conditioning = torch.cat([mask, masked, reference], dim=1).transpose(0, 1)[None]
            timings["vae_encode"] += time.perf_counter() - mark
            mark = time.perf_counter()
            audio = guided_audio(
                chunks[c * CHUNK_FRAMES : (c + 1) * CHUNK_FRAMES].to(dev, dtype), request.guidance_scale
            )
            done = c * request.num_inference_steps

            def step(j: int, _: dict[str, torch.Tensor], done: int = done) -> None:
                on_step(done + j + 1, total)

            latents = denoise(
                self.unet,
                scheduler,
                noise.repeat(1, 1, len(sources), 1, 1),
                conditioning,
                audio,
                request.guidance_scale,
                cache,
                step,
            )
            timings["denoise"] += time.perf_counter() - mark
            mark = time.perf_counter()
            decoded = self.vae.decode(latents[0].transpose(0, 1) / VAE_SCALING).sample
            # Paste-back runs on the device in float32; the chunk leaves the GPU frame by frame.
            decoded = (decoded * (1 - self.mask) + pixels * self.mask).float()
            timings["vae_decode"] += time.perf_counter() - mark
            mark = time.perf_counter()
            for k, s in enumerate(sources):
                face = resize_face_to_box(decoded[k], box)
                writer.write(paste_back(np.asarray(frames[s]), face, matrices[s]))
            timings["paste_back"] += time.perf_counter() - mark

    def _encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.vae.encode(pixels).latent_dist.sample(generator=generator) * VAE_SCALING

    @torch.no_grad()
    def _warmup(self, on_step: StepCallback, output: Path) -> Video:
        """Every model once on synthetic input: Whisper on silence, the face mesh on a blank
        frame, the VAE both ways and one UNet step on a full 16-frame chunk."""
        started = time.perf_counter()
        r, dev, dtype = self.resolution, self.device, self.dtype
        latent = r // self.vae_factor
        audio = feature_chunks(audio_features(self.whisper, np.zeros(SAMPLE_RATE, np.float32)), FPS)[:CHUNK_FRAMES]
        self._landmarker.points(np.zeros((r, r, 3), np.uint8))
        latents = self.vae.encode(torch.zeros(1, 3, r, r, device=dev, dtype=dtype)).latent_dist.mean
        self.vae.decode(latents)
        sample = torch.zeros(2, self.unet.config.in_channels, CHUNK_FRAMES, latent, latent, device=dev, dtype=dtype)
        self.unet(sample, 500, guided_audio(audio.to(dev, dtype), 1.5))
        on_step(1, 1)
        # Nothing is written: a warm-up's video has no frames and no bytes.
        return Video(
            path=output,
            fps=FPS,
            frames=0,
            width=0,
            height=0,
            bytes=0,
            timings={"warmup": time.perf_counter() - started},
        )
