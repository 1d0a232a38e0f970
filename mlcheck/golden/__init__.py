"""Golden outputs keyed by hardware: "the model still says what it said".

- :mod:`.values`: stored forms of tensors, numbers and nested values; the comparison modes.
- :mod:`.store`: ``__golden__/*.json`` files (validated, merged under a lock), key lookup.
- :mod:`.fixture`: the ``golden`` pytest fixture and its options.
- :mod:`.accept`: ``mlcheck golden accept``, writing observed values from results files.
"""
