"""Graph helpers below every stage: shape inference and probing, values of shape tensors."""
