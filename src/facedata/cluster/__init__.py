"""Clustering faces into identities, and measuring how good a clustering is."""
