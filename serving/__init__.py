"""Model serving: BentoML services and the models they load."""
