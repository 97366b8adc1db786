"""The upstream projects' own backbone test files, from the repositories at the installed
versions, with the constructor swapped for ours (``peft='Full'``): what upstream asserts of
its class holds for ours. Each file says what was changed."""
