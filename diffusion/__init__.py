"""The normal-conditioned multi-view diffusion prior: model, data, training, pseudo ground truth."""
