"""The movie recommender: MF and explainable MF models, explanations, evaluation, latent-factor drift."""
