"""Unit tests of the pure core: table tests, a virtual clock, no I/O."""
