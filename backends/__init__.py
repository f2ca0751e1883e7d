"""rescompiler's built-in backends, installed as ``rescompiler.backends.torch`` and
``rescompiler.backends.keras``, each imported lazily.

A backend module provides ``build(spec, **options)`` and ``emit(spec, **options)`` and is
registered in the ``rescompiler.backends`` entry-point group.
"""
