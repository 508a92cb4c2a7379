"""What is estimated and how: the one Levenberg-Marquardt loop and its problems, starting
points, Voronoi losses, the modulus, rate slopes, and the training loop of the transformer."""
