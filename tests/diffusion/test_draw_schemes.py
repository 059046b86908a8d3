"""Draw layouts (``noise.DrawScheme``): stratified t fills every stratum once per block and stays uniform; antithetic
pairs share t and negate the noise; both are seeded per (seed, image, draw), whatever the chunking; the engine and
the streaming engine use them."""

import torch

from meddiff.diffusion.engine import EngineSpec, draw_errors
from meddiff.diffusion.noise import DrawScheme, draw_pairs, image_seed, pair_noise
from meddiff.diffusion.schedule import ShiftedCosineSchedule
from meddiff.diffusion.streaming import StreamSpec, stream_classify

STRAT = DrawScheme("stratified", strata=8)
ANTI = DrawScheme(antithetic=True)


def test_stratified_blocks_visit_every_stratum_once_and_stay_uniform():
    seeds = [image_seed(0, f"img{i}") for i in range(200)]
    t, _ = draw_pairs(seeds, range(64), (1, 2, 2), scheme=STRAT)
    strata = (t * 8).floor().long().reshape(200, 8, 8)  # [image, block, position]
    assert (strata.sort(dim=2).values == torch.arange(8)).all()
    # the order inside a block differs between blocks and images (seeded), and every t is marginally uniform
    assert len({tuple(b.tolist()) for b in strata.reshape(-1, 8)}) > 1000
    hist = torch.histc(t.flatten(), bins=10, min=0, max=1) / t.numel()
    assert (hist - 0.1).abs().max() < 0.01
    # within [t_min, t_max]
    t2, _ = draw_pairs(seeds[:3], range(16), (1, 2, 2), t_min=0.2, t_max=0.6, scheme=STRAT)
    assert ((t2 >= 0.2) & (t2 <= 0.6)).all()
    assert (((t2 - 0.2) / 0.4 * 8).floor().reshape(3, 2, 8).sort(dim=2).values == torch.arange(8)).all()


def test_antithetic_pairs_share_t_and_negate_the_noise():
    t, eps = draw_pairs([image_seed(1, "a")], range(10), (1, 4, 4), scheme=ANTI)
    assert torch.equal(t[0, 0::2], t[0, 1::2])
    assert torch.equal(eps[0, 0::2], -eps[0, 1::2])
    assert not torch.equal(eps[0, 0], eps[0, 2])


def test_draws_do_not_depend_on_chunking_or_neighbours():
    s1, s2 = image_seed(0, "x"), image_seed(0, "y")
    for scheme in (STRAT, ANTI, DrawScheme("stratified", strata=4, antithetic=True)):
        t_all, e_all = draw_pairs([s1, s2], range(24), (1, 3, 3), scheme=scheme)
        t_part, e_part = pair_noise([s2, s2, s2], [13, 5, 20], (1, 3, 3), scheme=scheme)
        assert torch.equal(t_part, t_all[1, [13, 5, 20]]) and torch.equal(e_part, e_all[1, [13, 5, 20]])
    # the default layout is unchanged by the option (independent uniform draws, as before)
    t0, e0 = draw_pairs([s1], range(5), (1, 3, 3))
    t1, e1 = draw_pairs([s1], range(5), (1, 3, 3), scheme=DrawScheme())
    assert torch.equal(t0, t1) and torch.equal(e0, e1)


class Toy(torch.nn.Module):
    def forward(self, z, time, labels):
        centre = z.mean(dim=(1, 2, 3), keepdim=True)
        return 0.5 * z + 0.1 * (labels.float() - 0.5).reshape(-1, 1, 1, 1) * centre + 0.01 * time.reshape(-1, 1, 1, 1)


def test_engines_use_the_layout():
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    seeds = [image_seed(2, f"i{k}") for k in range(3)]
    spec = EngineSpec(num_classes=2, schedule=ShiftedCosineSchedule(image_size=8), max_batch=64, draws=STRAT)
    errors, t = draw_errors(Toy(), x, seeds, range(16), spec)
    assert ((t * 8).floor().long().reshape(3, 2, 8).sort(dim=2).values == torch.arange(8)).all()
    streamed = dict(stream_classify(Toy(), ((k, x[k], seeds[k]) for k in range(3)), spec,
                                    StreamSpec(n_draws=16, rule="none", chunk=8, slots=2)))
    for k in range(3):
        assert torch.equal(streamed[k].t, t[k]) and torch.allclose(streamed[k].errors, errors[k], rtol=1e-5)
