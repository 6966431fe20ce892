"""Delivery: the client, the call layer, the rate limit and the drivers, against fakes and the
sandbox.
"""
