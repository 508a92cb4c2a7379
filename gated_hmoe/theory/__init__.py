"""What the book derives: sympy identities of attention as an HMoE, the PDE-type interactions
and the rank test of strong identifiability (for the 1-D mixture and with attention's own
router), the exact-fit branches of a surplus head, the Gaussian KL identities."""
