"""Pixel and GAN losses against values computed by hand."""

import math

import pytest
import torch

from esrgan.losses import GANLoss, charbonnier_loss, pixel_loss


def bce_logit(x: float, target: float) -> float:
    """-[t log s(x) + (1-t) log(1-s(x))], written out."""
    s = 1.0 / (1.0 + math.exp(-x))
    return -(target * math.log(s) + (1 - target) * math.log(1 - s))


REAL = [1.0, 3.0]  # D logits of two real patches; mean 2
FAKE = [-1.0, 0.0]  # D logits of two fakes; mean -0.5


def logits(values):
    return torch.tensor(values, dtype=torch.float64).view(-1, 1)


def test_ragan_generator_loss_matches_the_seed_formula_by_hand():
    # (BCE(D(real) - mean D(fake), fake) + BCE(D(fake) - mean D(real), real)) / 2
    real_term = (bce_logit(1.5, 0) + bce_logit(3.5, 0)) / 2
    fake_term = (bce_logit(-3.0, 1) + bce_logit(-2.0, 1)) / 2
    loss = GANLoss("ragan").generator_loss(logits(FAKE), logits(REAL))
    assert loss.item() == pytest.approx((real_term + fake_term) / 2, rel=1e-12)


def test_ragan_discriminator_loss_matches_the_seed_formula_by_hand():
    real_term = (bce_logit(1.5, 1) + bce_logit(3.5, 1)) / 2
    fake_term = (bce_logit(-3.0, 0) + bce_logit(-2.0, 0)) / 2
    total, l_real, l_fake = GANLoss("ragan").discriminator_loss(logits(REAL), logits(FAKE))
    assert l_real.item() == pytest.approx(real_term, rel=1e-12)
    assert l_fake.item() == pytest.approx(fake_term, rel=1e-12)
    assert total.item() == pytest.approx((real_term + fake_term) / 2, rel=1e-12)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_ragan_generator_gradient_by_hand_flows_through_both_terms_and_the_fake_mean():
    # L = 1/2 [1/n sum_i BCE(r_i - mean f, 0) + 1/n sum_i BCE(f_i - mean r, 1)], n = 2, with dBCE(x, 0)/dx =
    # s(x) and dBCE(x, 1)/dx = s(x) - 1. The real term reaches f_j only through mean f (factor -1/n):
    # dL/df_j = 1/2 [-1/n^2 sum_i s(r_i - mean f) + 1/n (s(f_j - mean r) - 1)].
    through_mean = -(sigmoid(1.5) + sigmoid(3.5)) / 4
    expected = [(through_mean + (sigmoid(f - 2.0) - 1) / 2) / 2 for f in FAKE]
    fake = logits(FAKE).requires_grad_()
    GANLoss("ragan").generator_loss(fake, logits(REAL)).backward()
    assert fake.grad.flatten().tolist() == pytest.approx(expected, rel=1e-12)


def test_ragan_discriminator_gradient_by_hand_includes_the_batch_means():
    # As in the original code, D's gradient also flows through mean D(fake) and mean D(real):
    # dL/dr_j = 1/2 [1/n (s(r_j - mean f) - 1) - 1/n^2 sum_i s(f_i - mean r)], and likewise for f_j.
    through_fake_mean = -(sigmoid(-3.0) + sigmoid(-2.0)) / 4
    through_real_mean = -((sigmoid(1.5) - 1) + (sigmoid(3.5) - 1)) / 4
    real = logits(REAL).requires_grad_()
    fake = logits(FAKE).requires_grad_()
    GANLoss("ragan").discriminator_loss(real, fake)[0].backward()
    assert real.grad.flatten().tolist() == pytest.approx(
        [((sigmoid(r + 0.5) - 1) / 2 + through_fake_mean) / 2 for r in REAL], rel=1e-12)
    assert fake.grad.flatten().tolist() == pytest.approx(
        [(sigmoid(f - 2.0) / 2 + through_real_mean) / 2 for f in FAKE], rel=1e-12)


def test_plain_gan_losses_by_hand():
    loss = GANLoss("gan")
    assert loss.generator_loss(logits(FAKE), None).item() == pytest.approx(
        (bce_logit(-1.0, 1) + bce_logit(0.0, 1)) / 2, rel=1e-12)
    total, _, _ = loss.discriminator_loss(logits(REAL), logits(FAKE))
    expected = (bce_logit(1, 1) + bce_logit(3, 1)) / 2 + (bce_logit(-1, 0) + bce_logit(0, 0)) / 2
    assert total.item() == pytest.approx(expected, rel=1e-12)


def test_lsgan_is_mean_squared_distance_to_the_label():
    loss = GANLoss("lsgan")
    assert loss(logits(REAL), True).item() == pytest.approx(((1 - 1) ** 2 + (3 - 1) ** 2) / 2)
    assert loss(logits(FAKE), False).item() == pytest.approx((1 + 0) / 2)


def test_pixel_losses_by_hand():
    pred = torch.tensor([0.0, 0.5, 1.0])
    target = torch.tensor([0.0, 0.0, 0.0])
    assert pixel_loss("l1")(pred, target).item() == pytest.approx(0.5)
    assert pixel_loss("l2")(pred, target).item() == pytest.approx((0.25 + 1) / 3)
    expected = (math.sqrt(1e-6) + math.sqrt(0.25 + 1e-6) + math.sqrt(1 + 1e-6)) / 3
    assert charbonnier_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)


def test_unknown_loss_names_are_rejected():
    with pytest.raises(ValueError, match="gan_type"):
        GANLoss("wgan")
    with pytest.raises(ValueError, match="criterion"):
        pixel_loss("l3")
