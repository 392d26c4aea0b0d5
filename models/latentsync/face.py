"""Face alignment for LatentSync: three landmark points -> a similarity transform onto a fixed
template -> a (resolution x resolution) crop for the model; and the way back: the generated
face warped into the frame and blended with a soft-edged mask.

Written from upstream's published behaviour (LatentSync 1.6 `AlignRestore`): the template and
face box scale with the resolution, the transform is a least-squares similarity (Umeyama via
SVD) whose translation is nudged towards the nose and smoothed over frames, warps are bilinear
with corner-aligned sampling and grey (127) fill, and the paste-back mask is eroded by 1/20 of
the face size and Gaussian-blurred. Landmarks come from MediaPipe's face mesh (see
`FaceLandmarker`); the 106-point form is kept for upstream parity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# Template points (left brow, right brow, nose) at 256 px, before scaling by resolution/256*2.8.
_TEMPLATE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])
_FILL = 127.0


def landmarks3_from_106(landmarks: np.ndarray) -> np.ndarray:
    """insightface's 106-point layout -> rounded (left brow, right brow, nose) centres."""
    left = np.mean(landmarks[[43, 48, 49, 51, 50]], axis=0)
    right = np.mean(landmarks[101:106], axis=0)
    nose = np.mean(landmarks[[74, 77, 83, 86]], axis=0)
    return np.round([left, right, nose]).astype(np.float32)


def _homography(matrix: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) -> (n, 3, 3)."""
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=matrix.dtype, device=matrix.device).expand(matrix.shape[0], 1, 3)
    return torch.cat([matrix, bottom], dim=1)


def _pixel_to_normalised(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates -> [-1, 1] with the corner pixels' centres at -1 and 1."""
    sx = 2.0 / (width - 1) if width > 1 else 2.0 / 1e-14
    sy = 2.0 / (height - 1) if height > 1 else 2.0 / 1e-14
    return torch.tensor([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]], dtype=like.dtype, device=like.device)


def warp_affine(
    image: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int], fill: float | None = _FILL
) -> torch.Tensor:
    """Warp (n, c, h, w) by the source->destination affine `matrix` (n, 2, 3) into `size`
    (height, width), bilinear, corner-aligned; outside the source: `fill` (blended at the edge
    by how much of the sample was inside) or zeros when None."""
    n, c, h, w = image.shape
    out_h, out_w = size
    src_norm = _pixel_to_normalised(h, w, matrix)
    dst_norm = _pixel_to_normalised(out_h, out_w, matrix)
    forward = dst_norm @ _homography(matrix.float()) @ torch.linalg.inv(src_norm)
    inverse = torch.linalg.inv(forward)
    grid = F.affine_grid(inverse[:, :2, :], [n, c, out_h, out_w], align_corners=True)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if fill is None:
        return warped
    inside = F.grid_sample(torch.ones_like(image), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped + (1 - inside) * fill


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(_homography(matrix))[:, :2, :]


def _gaussian_blur(x: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, 1, h, w) with reflected borders."""
    offsets = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    pad = size // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, size))
    return F.conv2d(x, kernel.view(1, 1, size, 1))


def _erode_2x2(mask: torch.Tensor) -> torch.Tensor:
    """Minimum over each pixel and its up/left neighbours; the image border does not erode."""
    padded = F.pad(mask, (1, 0, 1, 0), value=float("inf"))
    return -F.max_pool2d(-padded, kernel_size=2, stride=1)


@dataclass
class FaceAligner:
    """Per-video alignment state: the template for a resolution and the smoothed nose bias."""

    resolution: int
    p_bias: torch.Tensor | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        return self.resolution / 256 * 2.8

    @property
    def template(self) -> np.ndarray:
        return _TEMPLATE * self.ratio

    @property
    def face_size(self) -> tuple[int, int]:
        """(width, height) of the face box before resizing to the model resolution."""
        return int(75 * self.ratio), int(100 * self.ratio)

    def matrix(self, points: np.ndarray, smooth: bool = True) -> np.ndarray:
        """Similarity transform (2x3 float32) taking the 3 face points onto the template."""
        src = torch.tensor(points, dtype=torch.float32)
        dst = torch.tensor(self.template, dtype=torch.float32)
        c1, c2 = src.mean(dim=0), dst.mean(dim=0)
        s1, s2 = torch.std(src - c1), torch.std(dst - c2)
        p1, p2 = (src - c1) / s1, (dst - c2) / s2
        u, _, v = torch.svd(p1.T @ p2)
        rotation = v @ u.T
        if torch.det(rotation) < 0:
            v[:, -1] = -v[:, -1]
            rotation = v @ u.T
        scaled = (s2 / s1) * rotation
        translation = c2.reshape(2, 1) - (s2 / s1) * (rotation @ c1.reshape(2, 1))
        result = torch.cat([scaled, translation], dim=1)
        if smooth:
            bias = p2[2] - p1[2]
            if self.p_bias is not None:
                bias = self.p_bias * 0.2 + bias * 0.8
            self.p_bias = bias
            result[:, 2] = result[:, 2] + bias
        return result.numpy()

    def crop(self, frame: np.ndarray, matrix: np.ndarray, device: torch.device | None = None) -> np.ndarray:
        """The face box (h, w, 3) uint8 cut out of an RGB frame; values truncated, as upstream."""
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None].float()
        w, h = self.face_size
        warped = warp_affine(image, torch.from_numpy(matrix).to(image.device)[None], (h, w))
        return warped[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)

    def align(self, frame: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (model-resolution face, uint8 RGB; the 2x3 matrix)."""
        matrix = self.matrix(points)
        face = cv2.resize(
            self.crop(frame, matrix), (self.resolution, self.resolution), interpolation=cv2.INTER_LANCZOS4
        )
        return face, matrix


def resize_face_to_box(face: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, r, r) in [-1, 1] -> (3, h, w), bicubic with antialiasing (torchvision's resize)."""
    return F.interpolate(face[None].float(), size=size, mode="bicubic", align_corners=False, antialias=True)[0]


def paste_back(frame: np.ndarray, face: torch.Tensor, matrix: np.ndarray) -> np.ndarray:
    """Blend a generated face (3, box_h, box_w) in [-1, 1] into the RGB frame it was cut from.
    Runs on `face`'s device (the GPU in serving); float32 throughout."""
    device = face.device
    h, w, _ = frame.shape
    m = torch.from_numpy(np.asarray(matrix, dtype=np.float32)).to(device)[None]
    inverse = invert_affine(m)
    inv_face = warp_affine(face[None].float(), inverse, (h, w))[0]
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    ones = torch.ones(1, 1, face.shape[1], face.shape[2], device=device)
    mask = _erode_2x2(warp_affine(ones, inverse, (h, w), fill=None))
    pasted = mask[0] * inv_face
    edge = int(float(mask.sum()) ** 0.5) // 20
    centre: np.ndarray = mask[0, 0].cpu().numpy().astype(np.float32)
    if edge > 0:
        centre = cv2.erode(centre, np.ones((edge * 2, edge * 2), np.uint8))
    blur = edge * 2 + 1
    sigma = 0.3 * ((blur - 1) * 0.5 - 1) + 0.8
    soft = torch.from_numpy(centre).to(device)[None, None]
    if blur > 1:
        soft = _gaussian_blur(soft, blur, sigma)
    soft = soft[0]
    original = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).float()
    out = soft * pasted + (1 - soft) * original
    return out.permute(1, 2, 0).contiguous().to(torch.uint8).cpu().numpy()


def box_size(resolution: int) -> tuple[int, int]:
    """(height, width) of the face box at a model resolution."""
    w, h = FaceAligner(resolution).face_size
    return h, w
