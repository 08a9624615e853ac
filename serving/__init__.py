"""The serving side: model code and the BentoML services in front of it."""
