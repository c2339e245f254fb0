"""DINOv2-with-registers condition, on a tiny random model of the same class saved to a folder."""
import pytest
import torch

from model.condition import ConditionConfig, ImageConditioner, preprocess


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    cfg = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=56, patch_size=14, num_register_tokens=4)
    folder = tmp_path_factory.mktemp("dinov2-tiny")
    Dinov2WithRegistersModel(cfg).save_pretrained(folder)
    return folder


def test_tokens_are_cls_plus_patches_without_registers(tiny_folder):
    cond = ImageConditioner.from_pretrained(ConditionConfig(model=str(tiny_folder), image_size=56))
    frames = torch.randint(0, 256, (3, 40, 70, 4), dtype=torch.uint8)
    tokens = cond(frames)
    assert tokens.shape == (3, 1 + 4 * 4, 32)  # CLS + (56/14)^2 patches; the 4 registers dropped
    full = cond.encoder(pixel_values=preprocess(frames, cond.cfg)).last_hidden_state
    assert torch.equal(tokens[:, 0], full[:, 0]) and torch.equal(tokens[:, 1:], full[:, 5:])
    assert all(not p.requires_grad for p in cond.parameters())


def test_preprocess_composites_pads_and_normalises():
    cfg = ConditionConfig(image_size=28)
    frames = torch.zeros(1, 10, 20, 4, dtype=torch.uint8)  # fully transparent, wide
    x = preprocess(frames, cfg)
    assert x.shape == (1, 3, 28, 28)
    white = (torch.ones(3) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 14, 14], white)  # transparent -> background
    with pytest.raises(ValueError, match="uint8"):
        preprocess(torch.zeros(1, 4, 4, 3), cfg)


def test_a_plain_dinov2_folder_gives_cls_plus_patches(tmp_path):
    """Hunyuan3D-2.1 reads facebook/dinov2-large (no registers, hy3dshape's DinoImageEncoder keeps
    the CLS token): the same conditioner loads it by its config.json and keeps every token."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=56, patch_size=14)
    Dinov2Model(cfg).save_pretrained(tmp_path)
    cond = ImageConditioner.from_pretrained(ConditionConfig(model=str(tmp_path), image_size=56))
    assert type(cond.encoder).__name__ == "Dinov2Model"
    frames = torch.randint(0, 256, (2, 40, 70, 4), dtype=torch.uint8)
    tokens = cond(frames)
    assert tokens.shape == (2, 1 + 4 * 4, 32)
    assert torch.equal(tokens, cond.encoder(pixel_values=preprocess(frames, cond.cfg)).last_hidden_state)
