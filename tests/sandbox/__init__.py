"""The sandbox itself: its endpoints, dialects and faults, and its paths against the documented
ones.
"""
