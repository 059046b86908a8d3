"""Diffusion core: schedule, v-parameterisation, loss, EMA, seeded draws, classifier engine, uncertainty."""
