"""A module of the user's own, next to their script and nowhere on the server: a closure that
uses it is deployed with it by value (tests/python/repository_check.py)."""


def triple(x):
    return 3.0 * float(x)
