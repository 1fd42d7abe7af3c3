"""The decision core: pure functions over plain data, with the clock passed in.

Nothing here performs I/O or imports anything from ftpsource outside ``core``.
"""
