"""The synthetic world's auxiliary losses: which words and cells they supervise."""

from __future__ import annotations

import numpy as np
import torch

from sharpeye_ros.model import SharpEyes
from sharpeye_ros.model.preprocess import ImageTransform
from sharpeye_ros.training.auxiliary import (
    PatchHead, box_cells, glance_losses, grounding_loss, grounding_targets, object_words, patch_targets,
    word_alignment_loss,
)
from sharpeye_ros.world import WorldObject, generate_scene, tokenize

T = ImageTransform.for_image(640, 480, 128)  # padded to 640x640: 80 source px per cell of an 8x8 grid


def _obj(colour, shape, size_class, box):
    return WorldObject(shape, colour, size_class, float(max(box[2] - box[0], box[3] - box[1])),
                       tuple(map(float, box)), "middle")


def test_object_words_are_the_size_colour_and_shape_of_each_object_in_order():
    caption = "a large red circle at the top left, a medium blue star in the middle and a small green cross on the right."
    tokens = tokenize(caption)
    words = object_words(caption)
    assert [(tokens[i], k) for i, k in words] == [
        ("large", 0), ("red", 0), ("circle", 0), ("medium", 1), ("blue", 1), ("star", 1),
        ("small", 2), ("green", 2), ("cross", 2)]
    # a colour without a shape (a truncated caption) names nothing
    assert object_words("a red.") == []


def test_box_cells_follow_the_padding_and_the_grid():
    # 640x480 is padded by 80 px at the top: source y 0..80 is cell row 1
    cells = box_cells((0, 0, 79, 79), T, 8).reshape(8, 8)
    assert cells[1, 0] and cells.sum() == 1
    cells = box_cells((150, 150, 170, 250), T, 8).reshape(8, 8)  # crosses column 1|2, rows 2..4
    assert set(zip(*np.nonzero(cells))) == {(r, c) for r in (2, 3, 4) for c in (1, 2)}


def test_patch_targets_label_touched_cells_and_the_larger_object_wins():
    big = _obj("red", "circle", "large", (0, 0, 100, 100))
    small = _obj("blue", "star", "small", (60, 60, 70, 70))  # inside the big one's cells
    far = _obj("white", "cross", "medium", (600, 400, 630, 430))
    labels = patch_targets([(small, big, far)], [T], 8)[0].reshape(8, 8, 3).numpy()
    assert labels[1, 0].tolist() == [1, 1, 1]  # the centre cell: red, circle, large (index + 1)
    assert labels[2, 1].tolist() == [0, 0, 1]  # touched only: the size class alone
    assert labels[6, 7].tolist() == [7, 5, 2]  # white, cross, medium
    assert (labels[0] == 0).all()  # the padding row holds nothing
    assert labels[..., :2].astype(bool).any(-1).sum() == 2  # the small one's centre cell went to the big one


def test_grounding_loss_rewards_attention_on_the_object():
    scene = generate_scene("train", 3)
    caption = scene.captions[0]
    targets = grounding_targets([caption], [scene.objects], [T], 8, len(tokenize(caption)) + 1)
    assert targets is not None and targets[0, -1].sum() == 0  # the EOS slot names nothing
    named = targets[0].any(-1)
    on = targets.float() + 1e-4  # attention on each word's object
    off = (~targets).float() + 1e-3  # attention everywhere else
    assert grounding_loss(on, targets) < 0.01 and grounding_loss(off, targets) > 1.0
    assert named.sum() == 3 * len(scene.objects)


def test_glance_losses_match_the_model_caption_loss_and_train_the_head():
    from sharpeye_ros.training.recipes import RECIPES

    torch.manual_seed(0)
    model = SharpEyes.from_config(RECIPES["smoke"]().model_config())
    scenes = [generate_scene("train", i) for i in range(2)]
    pixels, transforms = model.preprocess([s.image for s in scenes])
    captions = [s.captions[0] for s in scenes]
    head = PatchHead(model.vision.hidden_size)
    out = glance_losses(model, pixels, captions, [s.objects for s in scenes], transforms, True, head)
    assert torch.allclose(out["caption"], model.glance_loss(pixels, captions), atol=1e-6)
    out["grounding"].backward(retain_graph=True)
    assert model.lm.model.model.decoder.layers[-1].self_attn.q_proj.weight.grad is not None
    out["patch"].backward()
    assert head.proj.weight.grad.abs().sum() > 0


def test_word_alignment_rewards_embeddings_that_look_like_the_objects_words():
    from sharpeye_ros.training.recipes import RECIPES

    torch.manual_seed(0)
    model = SharpEyes.from_config(RECIPES["smoke"]().model_config())
    obj = _obj("red", "star", "large", (300, 300, 380, 380))
    targets = patch_targets([[obj]], [T], 8)
    cell = int(np.flatnonzero(targets[0, :, 0])[0])
    table = model.lm.model.get_input_embeddings().weight.detach()
    red, star = (model.lm.text_ids(" " + w)[0] for w in ("red", "star"))
    scale = 20 / table[red].pow(2).sum()  # logits of about 20 for the words it looks like
    aligned = torch.zeros(1, 64, table.shape[1])
    aligned[0, cell] = scale * (table[red] + table[star])  # looks like "red" + "star"
    wrong = torch.zeros_like(aligned)
    wrong[0, cell] = scale * table[model.lm.text_ids(" blue")[0]]
    assert word_alignment_loss(model, aligned, targets) < 0.5 < word_alignment_loss(model, wrong, targets)
    # cells without an object label contribute nothing
    assert word_alignment_loss(model, aligned, torch.zeros_like(targets)) == 0


def test_refine_loss_reuses_cached_pixels(tmp_path):
    from sharpeye_ros.training.recipes import RECIPES

    torch.manual_seed(0)
    model = SharpEyes.from_config(RECIPES["smoke"]().model_config())
    images = [generate_scene("train", i).image for i in range(2)]
    pixels, _ = model.preprocess(images)
    captions = [generate_scene("train", i).captions[0] for i in range(2)]
    torch.manual_seed(1)
    plain = model.refine_loss(images, captions, captions, zoom=True)
    calls = []
    real = model.processor  # count what still gets preprocessed

    class Counting:
        def __call__(self, batch, device=None):
            calls.append(len(batch))
            return real(batch, device=device)

        def transform(self, width, height):
            return real.transform(width, height)

    model.processor = Counting()
    torch.manual_seed(1)
    cached = model.refine_loss(images, captions, captions, zoom=True, pixels=pixels)
    model.processor = real
    assert torch.allclose(plain, cached, atol=1e-6)
    assert "preprocess" not in vars(model)  # the adapter is gone after the block
    assert calls == [2 * model.config.zoom.num_crops]  # only the zoom crops


def test_shift_flip_moves_the_boxes_with_the_pixels():
    from sharpeye_ros.training.auxiliary import shift_flip

    obj = _obj("red", "square", "large", (100, 20, 180, 60))  # model pixels x 20..36, y 20..28
    pixels = torch.zeros(16, 3, 128, 128)
    pixels[:, :, 20:28, 20:36] = 1.0
    torch.manual_seed(0)
    out, moved = shift_flip(pixels, [(obj,)] * 16, [T] * 16, torch.full((3,), -1.0), 8)
    assert len({tuple(m[0].box) for m in moved}) > 4  # different draws per sample
    for image, (o,) in zip(out, moved):
        x0, y0, x1, y1 = T.to_model(np.array(o.box))
        lit = (image[0] > 0.5).nonzero()
        # the lit block is where the moved box says, to the pixel
        assert (lit[:, 1].min(), lit[:, 1].max() + 1, lit[:, 0].min(), lit[:, 0].max() + 1) == \
            tuple(round(v) for v in (x0, x1, y0, y1))
        assert (image[0] == -1.0).any()  # uncovered pixels take the padding colour


def _zoom(source_boxes, crops_per_image):
    from sharpeye_ros.model.deeplens import ZoomTokens

    b = len(source_boxes)
    return ZoomTokens(torch.zeros(b, crops_per_image, 4, 1), torch.zeros(b, crops_per_image, 4, 1),
                      torch.zeros(b, crops_per_image, 4), np.asarray(source_boxes, dtype=np.float64))


def test_crop_objects_moves_the_objects_whose_centre_is_inside_into_the_crop_frame():
    from sharpeye_ros.training.auxiliary import crop_objects

    small = _obj("blue", "star", "small", (100, 100, 112, 112))  # centre (106, 106)
    big = _obj("red", "circle", "large", (60, 60, 160, 160))  # centre (110, 110)
    far = _obj("white", "cross", "medium", (500, 300, 530, 330))
    zoom = _zoom([[[90, 90, 108, 108], [480, 280, 560, 360]]], 2)
    crops, transforms = crop_objects(zoom, [(small, big, far)], 128)
    assert list(crops[0]) == [0] and crops[0][0].box == (10, 10, 22, 22)  # the big one's centre is outside
    assert list(crops[1]) == [2] and crops[1][2].box == (20, 20, 50, 50)
    assert (transforms[0].side, transforms[1].side) == (18, 80)


def test_refine_grounding_targets_point_at_the_crop_that_holds_the_object_else_at_the_glance():
    from sharpeye_ros.training.auxiliary import crop_objects, refine_grounding_targets

    small = _obj("blue", "star", "small", (100, 100, 120, 120))  # in the first crop
    big = _obj("red", "circle", "large", (320, 240, 420, 340))  # in no crop
    caption = "a small blue star at the top left and a large red circle in the middle."
    zoom = _zoom([[[80, 80, 160, 160], [0, 0, 40, 40]]], 2)  # 80 px crop: 20 px per cell of a 4x4 grid
    crops, crop_transforms = crop_objects(zoom, [(small, big)], 128)
    masks = refine_grounding_targets([caption], [(small, big)], [T], crops, crop_transforms, 8, 4, 20)[0].numpy()
    tokens = tokenize(caption)
    star, circle = tokens.index("star"), tokens.index("circle")
    glance, crop1, crop2 = masks[:, :64], masks[:, 64:80].reshape(-1, 4, 4), masks[:, 80:]
    # crop frame: x, y 20..40 px -> cell 1 of each axis (20 <= x < 40)
    assert set(zip(*np.nonzero(crop1[star]))) == {(1, 1)}
    assert not glance[star].any() and not crop2[star].any()
    assert glance[circle].any() and not crop1[circle].any() and not crop2[circle].any()
    assert masks[tokens.index("a")].sum() == 0  # "a" names nothing


def test_refine_losses_match_the_refine_loss_and_train_the_zoom_tokens():
    from sharpeye_ros.training.auxiliary import refine_losses
    from sharpeye_ros.training.recipes import RECIPES

    torch.manual_seed(0)
    model = SharpEyes.from_config(RECIPES["smoke"]().model_config())
    scenes = [generate_scene("train", i) for i in range(3)]
    images = [s.image for s in scenes]
    captions = [s.captions[0] for s in scenes]
    parts = refine_losses(model, images, captions, captions, [s.objects for s in scenes])
    assert set(parts) == {"refine", "zoom_grounding", "zoom_words"}
    assert torch.allclose(parts["refine"], model.refine_loss(images, captions, captions, zoom=True), atol=1e-6)
    assert parts["zoom_grounding"] > 0 and parts["zoom_words"] > 0
    model.zero_grad()
    parts["zoom_words"].backward()
    # the word alignment of the refined zoom tokens reaches DeepLens's output layer
    assert model.deeplens.out.weight.grad is not None and model.deeplens.out.weight.grad.abs().sum() > 0
