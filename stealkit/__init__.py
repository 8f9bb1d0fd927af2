"""stealkit: encoders as a service — pre-train, serve, steal, defend and verify image encoders.

Built from StolenEncoder (Liu et al., CCS 2022), Cont-Steal (Sha et al., CVPR 2023) and
"On the Difficulty of Defending SSL against Model Extraction" (Dziedzic et al., ICML 2022).
"""

__version__ = "0.1.0"
