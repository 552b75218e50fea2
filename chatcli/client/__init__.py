"""The protocol client shared by ``join``, ``replay --to``, ``bench`` and the tests."""
