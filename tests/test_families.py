"""The family registry: each pipeline gets the family that knows it, others one clear sentence."""

import pytest

from bridge.errors import ModelError
from bridge.families import FAMILIES, UNetFamily, family_for


def test_unet_pipelines_get_the_unet_family(tiny_engine):
    family = tiny_engine.family
    assert type(family) is UNetFamily and family.name == "sd" == tiny_engine.loaded.family
    assert family.native_size == (64, 64) and family.layer_factors == (8, 16, 32, 64)
    assert [s.name for s in family.attention_sites()] == [
        n for n, _ in tiny_engine.pipe.unet.named_modules() if n.endswith("attn2")]
    assert family.layer_geometry(15, (5, 9)) == (3, 5, 16)  # odd sides: ceil halves, never sqrt


def test_a_pipeline_no_family_knows_is_refused_in_one_sentence():
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())  # a UNet, but no text to attend to
    assert not any(cls.accepts(pipe) for cls in FAMILIES)
    with pytest.raises(ModelError) as err:
        family_for(pipe, "my-ddpm")
    message = str(err.value)
    assert message.startswith("model 'my-ddpm' is a DDPMPipeline, which no model family") and "\n" not in message
