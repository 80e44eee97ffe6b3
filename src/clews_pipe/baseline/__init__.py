"""A classical, training-free version matcher to set beside a model: chroma cross-recurrence Qmax."""
