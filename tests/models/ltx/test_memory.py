"""Where the text encoder lives: resident on a card with room for every component and a request's
working memory, in host memory otherwise. Sizes are the real components' configurations counted
on the meta device (T5-XXL's encoder, the 2B transformer, diffusers' default LTX VAE); card sizes
are what torch reports as total memory for each card."""

from __future__ import annotations

from models.base import BackendOptions
from models.ltx.backend import WORKING_RESERVE_BYTES, text_encoder_must_wait_on_host
from models.ltx.shapes import on_meta, parameters
from models.ltx.tiny import LTXVideoTinyBackend

GIB = 2**30
# torch.cuda.get_device_properties(...).total_memory, in MiB: L4 23,034; H100 80GB 81,559; H200 143,771.
CARDS = {"L4": 23_034 * 2**20, "H100": 81_559 * 2**20, "H200": 143_771 * 2**20}


def _real_weights() -> int:
    sizes = [2 * parameters(on_meta(name)) for name in ("t5", "transformer", "vae")]  # bf16
    assert 8.8 * GIB < sizes[0] < 8.9 * GIB  # T5-XXL's encoder: 4.76 B parameters
    return sum(sizes)


def test_an_l4_keeps_the_text_encoder_on_the_host_and_an_80_gb_card_does_not() -> None:
    weights = _real_weights()
    assert 13 * GIB < weights < 13.5 * GIB
    assert text_encoder_must_wait_on_host(CARDS["L4"], weights)
    assert not text_encoder_must_wait_on_host(CARDS["H100"], weights)
    assert not text_encoder_must_wait_on_host(CARDS["H200"], weights)
    # The reserve: the decode's activations at the largest admitted request (the reference's
    # 14.2 GiB whole-run peak less ~4.4 GiB of transformer and VAE weights), with a margin.
    assert 10 * GIB <= WORKING_RESERVE_BYTES <= 16 * GIB


def test_auto_on_a_cpu_keeps_everything_where_it_is() -> None:
    backend = LTXVideoTinyBackend(BackendOptions(device="cpu"))
    backend.load()
    assert backend.offload_text_encoder is False
    assert backend.describe()["text_encoder"] == "resident"


def test_weights_load_in_place_because_accelerate_is_installed() -> None:
    """Without accelerate, diffusers builds every model on the host and then copies the weights in
    (low_cpu_mem_usage off): twice the host memory and a slow load."""
    from diffusers.utils import is_accelerate_available

    assert is_accelerate_available()
