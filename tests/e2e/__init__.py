"""Whole loads end to end against the sandbox: faults and kills, recipes, the tutorial, nightly
updates.
"""
