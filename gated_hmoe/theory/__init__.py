"""What the book derives: sympy identities of attention as an HMoE, the PDE-type interactions
and the rank test of strong identifiability, the Gaussian KL identities."""
