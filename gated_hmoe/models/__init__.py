"""The objects of the book: attention layers and their HMoE reading, mixtures of experts,
data, attention students as atoms, a small transformer and its task (no estimation here)."""
